"""Member statuses in the heartbeats follow reality: a killed member goes DOWN within its health
monitor's window and comes back UP, a drained member is DRAIN, an administratively down one
MAINT, and a member of a pool without a health monitor is "no check". The stats socket inside
the amphora is the second witness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.drivers.base import LoadBalancerDriver
from harness.drivers.factory import DriverFactory
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model import loadbalancer as model
from harness.observe.haproxy_stats import AmphoraStatsSocket, show_stat
from harness.observe.heartbeats import HeartbeatReceiver
from harness.pytest_plugin import LabShape

# Octavia's [health_manager] heartbeat_interval is an integer number of seconds (oslo IntOpt):
# its agent refuses 0.5 and sends no heartbeat at all.
INTERVAL_S = 1
MONITOR = model.HealthMonitor(type=model.MonitorType.HTTP, delay=1, timeout=1, max_retries=2,
                              max_retries_down=2)
# haproxy marks a server down after max_retries_down failed checks, each taking at most
# delay + timeout, and up after max_retries good ones; a heartbeat then reports it.
DOWN_WINDOW_S = MONITOR.max_retries_down * (MONITOR.delay + MONITOR.timeout) + 2 * INTERVAL_S
UP_WINDOW_S = MONITOR.max_retries * (MONITOR.delay + MONITOR.timeout) + 2 * INTERVAL_S
# What a shared, busy host may add to those windows (engine operations, scheduling).
MARGIN_S = 10.0


@pytest.fixture(scope="module")
def lab_shape(heartbeats: HeartbeatReceiver) -> LabShape:
    return LabShape(amphorae=1, members=3, agent_settings=heartbeats.agent_settings(INTERVAL_S))


@pytest.fixture(scope="module")
def controller(lab: Lab, amphora: LabAmphora, members: list[LabMember],
               lb_driver_factory: DriverFactory) -> Iterator[LoadBalancerDriver]:
    vip = lab.allocate_vip()
    lab.plug_vip(amphora, vip)
    lab.plug_member_network(amphora)
    healthy, drained, disabled = (model.Member(address=str(m.address), port=m.port("http"))
                                  for m in members)
    drained.weight = 0
    disabled.admin_state_up = False
    monitored = model.Pool(members=[healthy, drained, disabled], health_monitor=MONITOR)
    unmonitored = model.Pool(members=[model.Member(address=str(members[0].address),
                                                   port=members[0].port("http"))])
    lb = model.LoadBalancer(vip_address=str(vip), listeners=[
        model.Listener(protocol=model.ListenerProtocol.HTTP, port=80, pools=[monitored],
                       default_pool_id=monitored.id),
        model.Listener(protocol=model.ListenerProtocol.HTTP, port=81, pools=[unmonitored],
                       default_pool_id=unmonitored.id),
    ])
    lb_controller = lb_driver_factory(lb, [amphora.client])
    lb_controller.create()
    yield lb_controller
    lb_controller.delete()


def pool_key(listener: model.Listener) -> str:
    return f"{listener.pools[0].id}:{listener.id}"


def reported(heartbeats: HeartbeatReceiver, amphora: LabAmphora, key: str) -> dict[str, str] | None:
    """Member statuses of one pool ("<pool_id>:<listener_id>") in the latest heartbeat."""
    latest = heartbeats.history(amphora.id).latest()
    pool = latest.message["pools"].get(key) if latest else None
    return pool["members"] if pool else None


def wait_for_statuses(heartbeats: HeartbeatReceiver, amphora: LabAmphora,
                      expected: dict[str, dict[str, str]], within_s: float) -> None:
    """Wait until the latest heartbeat reports these member statuses for these pools."""
    heartbeats.wait_until(
        lambda: all(reported(heartbeats, amphora, key) == statuses
                    for key, statuses in expected.items()),
        within_s, f"member statuses {expected}")


def test_statuses_say_how_members_are_configured(
    heartbeats: HeartbeatReceiver, lab: Lab, amphora: LabAmphora,
    controller: LoadBalancerDriver,
) -> None:
    monitored_listener, unmonitored_listener = controller.lb.listeners
    healthy, drained, disabled = monitored_listener.pools[0].members
    (unmonitored,) = unmonitored_listener.pools[0].members
    wait_for_statuses(heartbeats, amphora, {
        pool_key(monitored_listener): {healthy.id: "UP", drained.id: "DRAIN", disabled.id: "MAINT"},
        pool_key(unmonitored_listener): {unmonitored.id: "no check"},
    }, UP_WINDOW_S + MARGIN_S)
    latest = heartbeats.history(amphora.id).latest().message["pools"]
    assert latest[pool_key(monitored_listener)]["status"] == "UP"
    assert latest[pool_key(unmonitored_listener)]["status"] == "UP"

    # What haproxy itself says, through the stats socket.
    table = show_stat(AmphoraStatsSocket(lab.provider, amphora, controller.lb.id))
    statuses = table.server_statuses(monitored_listener.pools[0].id, monitored_listener.id)
    assert statuses[healthy.id] == "UP" and statuses[disabled.id] == "MAINT"
    assert table.row(pool_key(monitored_listener), drained.id)["weight"] == "0"
    assert table.server_statuses(unmonitored_listener.pools[0].id, unmonitored_listener.id) \
        == {unmonitored.id: "no check"}


def test_killed_member_goes_down_and_comes_back_up(
    heartbeats: HeartbeatReceiver, lab: Lab, amphora: LabAmphora, members: list[LabMember],
    controller: LoadBalancerDriver,
) -> None:
    monitored_listener, unmonitored_listener = controller.lb.listeners
    healthy, drained, disabled = monitored_listener.pools[0].members
    (unmonitored,) = unmonitored_listener.pools[0].members
    up = {healthy.id: "UP", drained.id: "DRAIN", disabled.id: "MAINT"}
    wait_for_statuses(heartbeats, amphora, {pool_key(monitored_listener): up},
                      UP_WINDOW_S + MARGIN_S)

    victim = members[0]  # the healthy member (and the unmonitored pool's, which cannot tell)
    lab.provider.kill(victim.node)
    try:
        wait_for_statuses(heartbeats, amphora, {
            pool_key(monitored_listener): {**up, healthy.id: "DOWN"},
            pool_key(unmonitored_listener): {unmonitored.id: "no check"},
        }, DOWN_WINDOW_S + MARGIN_S)
    finally:
        lab.provider.start(victim.node)
    wait_for_statuses(heartbeats, amphora, {pool_key(monitored_listener): up},
                      UP_WINDOW_S + MARGIN_S)
