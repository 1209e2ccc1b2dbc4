"""Which amphora-agent the suites' amphorae run, for the pytest plugin.

Options:
    --agent ours|octavia       ours (default), or OpenStack Octavia's own agent in an image built
                               from --octavia-source (harness.lab.octavia_image; docker only)

Marker:
    agent_xfail(name, reason=...)   with agent `name` the test fails for a known reason (a bug of
                                    that agent, named with its code): xfail(strict=True)
"""

from __future__ import annotations

import pytest

from harness.lab.octavia_agent import AGENTS, OCTAVIA
from harness.pytest_markers import xfail_under


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--agent", default="ours", choices=AGENTS,
                    help="which amphora-agent the amphorae run: ours (default) or OpenStack "
                         "Octavia's own (octavia; built from --octavia-source; docker only)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "agent_xfail(name, reason): fails with that agent (ours|octavia) for the "
                   "reason given (a known bug, named): xfail(strict=True) there")
    if config.getoption("--agent") == OCTAVIA and config.getoption("--provider") != "docker":
        raise pytest.UsageError("--agent octavia runs on the docker provider only (Octavia's "
                                "agent needs systemd as PID 1 in a container)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    agent = config.getoption("--agent")
    for item in items:
        xfail_under(item, "agent_xfail", AGENTS, agent, "an agent")
