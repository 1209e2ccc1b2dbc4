"""Counts across a failover: an active/standby pair reports one listener from both amphorae;
after the master dies the new master's heartbeats go on counting, and the sum over both
amphorae equals what was sent.

Traffic stops while the VIP moves: a connection cut off inside the dying master was counted by
nobody who lives to tell, which says nothing about the counters. Whether the VIP has moved is
read from the host's neighbour table (keepalived's gratuitous ARP), not from traffic, which would
itself be counted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness.drivers.base import LoadBalancerDriver
from harness.drivers.factory import DriverFactory
from harness.faults.injector import FaultInjector
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model import loadbalancer as model
from harness.observe.heartbeats import HeartbeatReceiver
from harness.observe.vip import Answer, ask, carriers_of, settled_master
from harness.pytest_plugin import LabShape

# Octavia's [health_manager] heartbeat_interval is an integer number of seconds (oslo IntOpt):
# its agent refuses 0.5 and sends no heartbeat at all.
INTERVAL_S = 1
LISTENER_PORT = 80
BEFORE, AFTER = 12, 8
# Answers in a row from one amphora that say the first election is over.
STEADY_ANSWERS = 5
VIP_MOVE_TIMEOUT_S = 60.0
# Long enough that a request a busy haproxy counted is never given up on by the client.
REQUEST_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def lab_shape(heartbeats: HeartbeatReceiver) -> LabShape:
    return LabShape(amphorae=2, members=2, agent_settings={
        **heartbeats.agent_settings(INTERVAL_S), "topology": "ACTIVE_STANDBY"})


@pytest.fixture(scope="module")
def controller(lab: Lab, amphorae: list[LabAmphora], members: list[LabMember],
               lb_driver_factory: DriverFactory) -> Iterator[LoadBalancerDriver]:
    """The create flow of an ACTIVE_STANDBY load balancer."""
    vip = lab.allocate_vip()
    member_ports, vip_ports = [], []
    for amphora in amphorae:
        member_ports.append(lab.attach_member_port(amphora))
        vip_ports.append(lab.attach_vip_port(amphora))
    pool = model.Pool(members=[model.Member(address=str(m.address), port=m.port("http"))
                               for m in members])
    lb = model.LoadBalancer(vip_address=str(vip), topology=model.Topology.ACTIVE_STANDBY,
                            listeners=[model.Listener(protocol=model.ListenerProtocol.HTTP,
                                                      port=LISTENER_PORT, pools=[pool],
                                                      default_pool_id=pool.id)])
    lb_controller = lb_driver_factory(lb, [a.client for a in amphorae])
    lb_controller.create(vip_ports, member_ports)
    yield lb_controller
    lb_controller.delete()


def vip_port_mac(amphora: LabAmphora) -> str:
    return next(p.mac_address for p in amphora.ports if p.network.spec.role == "vip")


def wait_for_vip_at(lab: Lab, amphora: LabAmphora, vip: str) -> None:
    deadline = time.monotonic() + VIP_MOVE_TIMEOUT_S
    while lab.neighbour_mac(vip) != vip_port_mac(amphora):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the VIP did not move to {amphora.name} within "
                               f"{VIP_MOVE_TIMEOUT_S}s (neighbour: {lab.neighbour_mac(vip)})")
        time.sleep(0.2)


def vip_url(vip: str) -> str:
    return f"http://{vip}:{LISTENER_PORT}/"


def send(vip: str, count: int, carriers: dict[str, str]) -> list[str | None]:
    """count requests through the VIP, each on a new connection; the amphora that answered each
    (named by the member: harness.observe.vip.carriers_of)."""
    answers = [ask(vip_url(vip), timeout=REQUEST_TIMEOUT_S, carriers=carriers)
               for _ in range(count)]
    assert [a.status for a in answers] == [200] * count, answers
    return [a.amphora for a in answers]


def settle(vip: str, carriers: dict[str, str]) -> list[str | None]:
    """Wait (bounded) until STEADY_ANSWERS in a row come from one amphora
    (harness.observe.vip.settled_master); who answered each request sent meanwhile.

    Which amphora wins the first election is a race: both keepalived start as BACKUP with
    nopreempt (Octavia's config), and the first Master_Down timer to fire takes the VIP; if both
    fire, the lower priority yields a moment later. Until then a connection may fail (it reached
    no haproxy and counts nowhere) or be answered by either; every answer is counted.
    """
    answered: list[str | None] = []

    def ask_and_note(url: str) -> Answer:
        answer = ask(url, timeout=REQUEST_TIMEOUT_S, carriers=carriers)
        if answer.status is not None:  # a haproxy answered, so it counted the connection
            answered.append(answer.amphora)
        return answer

    settled_master(vip_url(vip), VIP_MOVE_TIMEOUT_S, count=STEADY_ANSWERS, ask=ask_and_note)
    return answered


def test_counts_continue_on_the_new_master(
    lab: Lab, amphorae: list[LabAmphora], heartbeats: HeartbeatReceiver,
    controller: LoadBalancerDriver,
) -> None:
    vip = controller.lb.vip_address
    listener_id = controller.lb.listeners[0].id
    carriers = carriers_of(amphorae)
    settling = settle(vip, carriers)
    master = next(a for a in amphorae if a.id == settling[-1])
    backup = next(a for a in amphorae if a is not master)
    both = [master.id, backup.id]

    assert send(vip, BEFORE, carriers) == [master.id] * BEFORE
    sent = len(settling) + BEFORE
    assert heartbeats.settled_totals(listener_id, both, sent)["totconns"] == sent
    # The standby reports exactly what it answered while the election settled (usually 0).
    assert (heartbeats.history(backup.id).summed(listener_id, "totconns")
            == settling.count(backup.id))

    injector = FaultInjector(lab)
    injector.kill(master)
    try:
        wait_for_vip_at(lab, backup, vip)
        assert send(vip, AFTER, carriers) == [backup.id] * AFTER
        # The dead master sends nothing more: the new master's heartbeats carry the rest.
        on_new_master = heartbeats.settled_totals(listener_id, [backup.id], AFTER)
        over_both = heartbeats.totals(listener_id, both)
    finally:
        injector.heal_all()
    assert on_new_master["totconns"] == AFTER
    assert over_both["totconns"] == sent + AFTER
