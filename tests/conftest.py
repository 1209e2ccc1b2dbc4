"""Fixtures of the tests under tests/: the agent as a process on this host and networks made
for the test in network namespaces (no container engine). What they hand out is in
tests/support/; scenario suites get a whole harness Lab from harness.pytest_plugin instead.

- `free_port`: a function returning a loopback TCP port that is free right now.
- `lab`: a NetnsLab (tests/support/netns_lab.py), removed when the test ends.
- `pair_member`: a member server on the lab's VIP network at tests/support/vrrp_pair.py's
  MEMBER address.
- `pki`: a lab PKI (CA, driver certificate) in a temp directory.
- `agent_factory(**options)`: starts agents (tests/support/local_agent.py: LocalAgents.start)
  and at teardown removes them with every process, directory and namespace they made.
- `lb_config(agent, backend_port, ...)`: a haproxy.cfg with one listener forwarding to a backend
  (tests/support/lb_configs.py: forwarding_lb_config).
- `http_backend`: a small HTTP server on loopback for haproxy to forward to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.amphora_api.pki import LabPKI
from tests.support import vrrp_pair
from tests.support.http_backend import HttpBackend, serving_http_backend
from tests.support.lb_configs import LbConfig, forwarding_lb_config
from tests.support.local_agent import LocalAgents, RunningAgent, free_loopback_port
from tests.support.netns_lab import NetnsLab


@pytest.fixture
def free_port() -> Callable[[], int]:
    return free_loopback_port


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    """Test-made networks on this host, all removed when the test ends. (Scenario suites get a
    whole Lab under this name from harness.pytest_plugin instead.)"""
    with NetnsLab() as running:
        yield running


@pytest.fixture
def pair_member(lab: NetnsLab) -> Iterator[str]:
    """The member server (harness.lab.member_server) at the VRRP pair's MEMBER address, in a
    namespace of its own on the lab's VIP network; yields its id."""
    with lab.member_server(vrrp_pair.MEMBER, vrrp_pair.MEMBER_PORT, "m1") as member_id:
        yield member_id


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return LabPKI(tmp_path / "pki")


@pytest.fixture
def agent_factory(pki: LabPKI) -> Iterator[Callable[..., RunningAgent]]:
    """agent_factory(amphora_id=None, network_namespace="", max_request_body_bytes=None,
    server_pem=None, extra=None, client_options=None, host="127.0.0.1", port=None,
    **settings) -> RunningAgent (LocalAgents.start)."""
    agents = LocalAgents(pki)
    try:
        yield agents.start
    finally:
        agents.close()


@pytest.fixture
def lb_config() -> Callable[..., LbConfig]:
    """lb_config(agent, backend_port, lb_id=None, port=None, mode="http", extra_global="")."""
    return forwarding_lb_config


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    with serving_http_backend() as server:
        yield server
