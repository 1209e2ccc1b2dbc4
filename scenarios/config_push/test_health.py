"""Health monitors through the VIP: a member that stops answering its monitor is taken out and
traffic avoids it; when it answers again it is put back."""

from __future__ import annotations

from harness.lab.lab import Lab, LabMember
from harness.model import loadbalancer as model


def test_an_unresponsive_member_is_taken_out_and_comes_back(load, deploy, lab: Lab,
                                                           members: list[LabMember], vip_url,
                                                           until):
    deploy(load("health"))
    url = vip_url(80)
    until(url, lambda a: set(a) == {"m1", "m2", "m3"})

    frozen = members[1]  # m2
    lab.provider.pause(frozen.node)
    try:
        until(url, lambda a: set(a) == {"m1", "m3"}, count=20)
    finally:
        lab.provider.unpause(frozen.node)

    until(url, lambda a: set(a) == {"m1", "m2", "m3"})


def test_a_ping_monitor_takes_out_a_member_that_does_not_answer_pings(
        load, deploy, lab: Lab, vip_url, until):
    """PING monitors run the amphora's ping-wrapper.sh (Octavia's external check) from haproxy;
    a member address nobody holds fails it, so round robin never sends requests there."""
    lb = load("health")
    pool = lb.listeners[0].pools[0]
    pool.health_monitor = model.HealthMonitor(
        type=model.MonitorType.PING, delay=1, timeout=1, max_retries=1, max_retries_down=1)
    ghost = model.Member(address=str(lab.plan("member").node_address(90)), port=8080)
    pool.members = [pool.members[0], ghost]
    deploy(lb)
    # Without the monitor, every second request would go to the ghost and fail.
    answers = until(vip_url(80), lambda a: set(a) == {"m1"}, count=20)
    assert answers["m1"] == 20
