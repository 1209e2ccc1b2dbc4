"""The bench's agent axis: the Amphora API's latency per call for our agent and for Octavia's
own agent (harness.bench.host_agents: both processes on this host, loopback, one PKI), requests
interleaved one for one so the machine's noise hits both alike.

Each call is timed through the driver's client (harness.amphora_api.client), which keeps its
connection when the agent keeps it alive; Octavia's gunicorn sync worker closes it after every
response, so each of its calls pays a TCP + TLS handshake, as a controller's would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from harness.bench.host_agents import HostAgent, host_agents
from harness.bench.results import AGENT_CALLS, Samples, agent_metric

# Requests before the timed ones (connection, first-use caches, haproxy's page cache).
WARMUP_ROUNDS = 3
# A small, valid configuration: what haproxy -c takes to check is part of the upload's cost.
CONFIG = """global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend listener
    bind 127.0.0.1:8080  # checked (haproxy -c), never bound
    default_backend pool
backend pool
    server member 127.0.0.1:1 check
"""
CERT_NAME = "listener.pem"


def _calls(agent: HostAgent, lb_id: str) -> dict[str, Callable[[], Any]]:
    client = agent.client
    pem = agent.server_pem.read_bytes()  # any key + certificate bundle will do
    return {
        "version": client.version,
        "info": client.get_info,
        "details": client.get_details,
        "upload": lambda: client.upload_config(lb_id, CONFIG),
        "cert_put": lambda: client.upload_cert(lb_id, CERT_NAME, pem),
        "cert_md5": lambda: client.get_cert_md5(lb_id, CERT_NAME),
    }


def measure_agents(names: tuple[str, ...], requests: int, samples: Samples,
                   say: Callable[[str], None]) -> None:
    """`requests` timed calls of each kind per agent, agents alternating call by call."""
    say(f"agent axis: starting {', '.join(names)} on this host")
    with host_agents(names) as agents:
        lb_id = str(uuid.uuid4())
        calls = {name: _calls(agent, lb_id) for name, agent in agents.items()}
        for call in AGENT_CALLS:
            say(f"agent axis: {requests} x {call} per agent, interleaved")
            for n in range(WARMUP_ROUNDS + requests):
                for name in names:
                    started = time.perf_counter()
                    calls[name][call]()
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    if n >= WARMUP_ROUNDS:
                        samples.add(agent_metric(name, call), elapsed_ms)


def side_by_side(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per call measured for both agents: each one's p50 and the median of our per-pair ratio
    to Octavia's (the calls alternate one for one, so pair n met the same machine)."""
    rows = []
    for call in AGENT_CALLS:
        ours = metrics.get(agent_metric("ours", call))
        octavia = metrics.get(agent_metric("octavia", call))
        if not ours or not octavia:
            continue
        rows.append({"call": call, "ours_p50_ms": ours["median"],
                     "octavia_p50_ms": octavia["median"],
                     "ratio": ours["ratio"]["median"] if ours.get("ratio") else None})
    return rows
