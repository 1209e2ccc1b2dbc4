"""The kill-agent fault's pattern (harness.faults.node.AGENT_PATTERN, given to `pkill -f`) matches
every process of either agent, Octavia's gunicorn master and worker with their own titles
included, and nothing else an amphora runs: not the VRRP check keepalived starts, not haproxy,
not Octavia's prometheus-proxy."""

from __future__ import annotations

import re

import pytest

from harness.faults.node import AGENT_PATTERN


@pytest.mark.parametrize("cmdline", [
    "python3 -m amphora_agent --config-file /etc/octavia/amphora-agent.conf",
    "/opt/amphora-agent-venv/bin/python3 /opt/amphora-agent-venv/bin/amphora-agent "
    "--config-file /etc/octavia/amphora-agent.conf",
    "gunicorn: master [gunicorn]",
    "gunicorn: worker [gunicorn]",
])
def test_every_agent_process_matches(cmdline: str) -> None:
    assert re.search(AGENT_PATTERN, cmdline)


@pytest.mark.parametrize("cmdline", [
    "python3 -m amphora_agent.vrrp_check /var/lib/octavia/vrrp/check.sock",
    "/opt/amphora-agent-venv/bin/python3 /opt/amphora-agent-venv/bin/haproxy-vrrp-check "
    "/var/lib/octavia/1.sock",
    "/opt/amphora-agent-venv/bin/python3 /usr/local/bin/prometheus-proxy",
    "/usr/sbin/haproxy -Ws -f /var/lib/octavia/1/haproxy.cfg -p /var/lib/octavia/1/1.pid",
    "/usr/sbin/keepalived --log-facility=1 -f /var/lib/octavia/vrrp/octavia-keepalived.conf",
    "tail -f /var/log/amphora-agent.log",
])
def test_nothing_else_matches(cmdline: str) -> None:
    assert not re.search(AGENT_PATTERN, cmdline)
