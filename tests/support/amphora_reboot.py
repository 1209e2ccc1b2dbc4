"""A reboot of a local agent's whole amphora, as Docker does a `docker kill` + `docker start` of
an amphora container: every process dies at once, the data-plane namespace goes (it lived on
/run, a fresh tmpfs at every start), each hot-plugged port comes back in the default namespace
as a new veth with the same MAC, and the agent starts again."""

from __future__ import annotations

from tests.support.local_agent import RunningAgent
from tests.support.netns_lab import NetnsLab, Port, ip


def reboot(agent: RunningAgent, lab: NetnsLab, namespace: str, ports: list[Port]) -> list[Port]:
    """Take the amphora down as a crash does and boot it: returns the ports as they came back
    (the same MACs on new veths), after the agent answered again."""
    agent.kill_everything()
    ip("netns", "del", namespace)  # the namespace's veth ends go with it
    back = [lab.hot_plug(mac=port.mac) for port in ports]
    for port in back:
        ip("link", "set", port.name, "up")
    agent.start()
    return back
