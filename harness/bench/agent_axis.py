"""The bench's agent axis: our agent against OpenStack Octavia's own agent, in two places.

On this host (measure_agents): the Amphora API's latency per call, both agents as processes on
this host (harness.bench.host_agents: loopback, one PKI), requests interleaved one for one so
the machine's noise hits both alike. Each call is timed through the driver's client
(harness.amphora_api.client), which keeps its connection when the agent keeps it alive;
Octavia's gunicorn sync worker closes it after every response, so each of its calls pays a
TCP + TLS handshake, as a controller's would.

In lab amphorae (octavia_lab, and the bench's boots and pushes): amphora_ready_s and
config_push_to_serving_ms of amphorae running Octavia's agent, in a second lab beside ours.
A lab's agent decides how it boots and plugs every amphora (systemd as PID 1, the options
Octavia's controller writes, small interface indexes for hot-plugged ports), so Octavia's
amphorae get a lab of their own rather than a second image in ours. Their boots take turns with
the bare containers and our amphorae (harness.bench.engine_timings), their pushes with ours
(harness.bench.single_lb.measure_config_pushes); the load balancer is created by our
controller, as the suites' --agent octavia runs do.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.bench.host_agents import HostAgent, host_agents
from harness.bench.plan import BenchSettings
from harness.bench.results import (
    AGENT_CALLS,
    LAB_AGENT_METRICS,
    Samples,
    agent_metric,
    lab_metric,
    ratio_samples,
)
from harness.bench.single_lb import SingleLoadBalancer, measure_config_pushes
from harness.lab.lab import Lab, LabAmphora
from harness.lab.octavia_agent import OCTAVIA
from harness.lab.providers.base import Provider

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
# Where each part of the axis runs (the agents table's "where").
ON_HOST = "host processes"
IN_LAB = "lab amphorae"
# Octavia's agent needs systemd as PID 1 in a container: the docker provider only.
LAB_PROVIDER = "docker"


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


def lab_axis_runs(agents: tuple[str, ...], provider: Provider) -> bool:
    """Whether amphorae of Octavia's agent are measured in a lab too."""
    return OCTAVIA in agents and provider.name == LAB_PROVIDER


def octavia_lab(provider: Provider, amphora_image: str, member_image: str,
                results_dir: Path) -> Lab:
    """The second lab: amphorae of Octavia's agent (amphora_image, its image), members of ours."""
    return Lab(provider, agent=OCTAVIA, amphora_image=amphora_image, member_image=member_image,
               results_dir=results_dir)


def measure_push_against_octavia(lab: Lab, amphora: LabAmphora, ours: SingleLoadBalancer,
                                 settings: BenchSettings, samples: Samples,
                                 say: Callable[[str], None]) -> None:
    """The bench's load balancer on `amphora` (Octavia's agent, in `lab`) with two members of
    its own, then config_push_to_serving_ms on it and on ours, push for push."""
    say("Octavia's agent: members, load balancer")
    octavia = SingleLoadBalancer(lab, amphora, lab.add_members(2), settings, samples, say)
    metric = "config_push_to_serving_ms"
    measure_config_pushes({lab_metric("ours", metric): ours,
                           lab_metric(OCTAVIA, metric): octavia},
                          settings.push_repeats, samples, say)


def side_by_side(metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each measure taken for both agents: where (host processes or lab amphorae), each one's
    p50 and the median of our per-pair ratio to Octavia's (calls, boots and pushes take turns,
    so pair n met the same machine). A measure stated against a same-run reference for both
    (readiness: container_start_s) also carries each agent's ratio to it."""
    pairs = [(call, agent_metric("ours", call), agent_metric(OCTAVIA, call), ON_HOST)
             for call in AGENT_CALLS]
    pairs += [(metric, lab_metric("ours", metric), lab_metric(OCTAVIA, metric), IN_LAB)
              for metric in LAB_AGENT_METRICS]
    rows = []
    for measure, ours_key, octavia_key, where in pairs:
        ours, octavia = metrics.get(ours_key), metrics.get(octavia_key)
        if ours and octavia:
            rows.append(_row(measure, where, ours, octavia))
    return rows


def _row(measure: str, where: str, ours: dict[str, Any],
         octavia: dict[str, Any]) -> dict[str, Any]:
    row = {"measure": measure, "where": where, "unit": ours["unit"],
           "ours_p50": ours["median"], "octavia_p50": octavia["median"],
           "ratio": statistics.median(ratio_samples(ours["samples"], octavia["samples"]))}
    reference = ours.get("reference")
    if ours.get("ratio") and octavia.get("ratio") and reference == octavia.get("reference"):
        row |= {"reference": reference, "ours_to_reference": ours["ratio"]["median"],
                "octavia_to_reference": octavia["ratio"]["median"]}
    return row
