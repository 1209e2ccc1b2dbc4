"""haproxy.cfg texts the tests push to a local agent, written by hand in the shape Octavia's
driver renders (the agent finds listeners by these names): one listener forwarding to a backend,
or one that answers every GET with a fixed text and needs no member."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.local_agent import RunningAgent, free_loopback_port


@dataclass(frozen=True)
class LbConfig:
    lb_id: str
    listener_id: str
    pool_id: str
    member_id: str
    port: int
    text: str


def forwarding_lb_config(
    agent: RunningAgent,
    backend_port: int,
    *,
    lb_id: str | None = None,
    port: int | None = None,
    mode: str = "http",
    extra_global: str = "",
) -> LbConfig:
    """A load balancer with one listener on 127.0.0.1:port forwarding to the backend on
    127.0.0.1:backend_port; ids and port are made up unless given."""
    lb_id = lb_id or str(uuid.uuid4())
    listener_id, pool_id, member_id = (str(uuid.uuid4()) for _ in range(3))
    port = port or free_loopback_port()
    text = f"""# Configuration for loadbalancer {lb_id}
global
    daemon
    maxconn 4000
    stats socket {agent.base_path}/{lb_id}.sock mode 0666 level user
    server-state-file {agent.base_path}/{lb_id}/servers-state
{extra_global}
defaults
    retries 3
    option redispatch
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend {listener_id}
    maxconn 4000
    bind 127.0.0.1:{port}
    mode {mode}
    default_backend {pool_id}:{listener_id}

backend {pool_id}:{listener_id}
    mode {mode}
    load-server-state-from-file global
    server {member_id} 127.0.0.1:{backend_port} weight 1
"""
    return LbConfig(lb_id, listener_id, pool_id, member_id, port, text)


def answering_haproxy_config(base_path: Path, lb_id: str, listener_id: str, answer: str,
                             bind: str) -> str:
    """A listener on bind ("address:port", "[v6 address]:port") that answers every GET with
    answer."""
    return f"""global
    daemon
    stats socket {base_path}/{lb_id}.sock mode 0666 level user

defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend {listener_id}
    bind {bind}
    mode http
    http-request return status 200 content-type text/plain string "{answer}"
"""


@dataclass(frozen=True)
class AnsweringLb:
    lb_id: str
    listener_id: str
    port: int


def upload_answering_lb(agent: RunningAgent, vip: str, port: int, answer: str) -> AnsweringLb:
    """Upload (not start) a new load balancer answering answer on vip:port (an IPv6 vip in
    brackets)."""
    lb = AnsweringLb(str(uuid.uuid4()), str(uuid.uuid4()), port)
    agent.client.upload_config(lb.lb_id, answering_haproxy_config(
        agent.base_path, lb.lb_id, lb.listener_id, answer, bind=f"{vip}:{port}"))
    return lb
