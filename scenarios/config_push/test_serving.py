"""Config push on one amphora, observed through traffic to the VIP: listeners serve, the
balancing algorithm shows in who answers, every change takes effect after a push, pushes under
load lose nothing, invalid configs are refused without a trace, delete cleans up, an agent
restart changes nothing, and load balancers sharing the amphora stay independent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.amphora_api.client import AmphoraAPIError
from harness.faults.injector import FaultInjector
from harness.lab import reach
from harness.model.loadbalancer import (
    Algorithm,
    HealthMonitor,
    Listener,
    ListenerProtocol,
    Member,
    Pool,
)
from harness.observe.traffic import TimelineRecorder
from harness.paths import FIXTURES_DIR

INVALID_CONFIGS = sorted((FIXTURES_DIR / "haproxy" / "invalid").glob("*.cfg"))
PUSHES_UNDER_LOAD = 20
DEAD_PORT = 1  # nothing listens there on a member
# What Octavia's agent keeps of the last config `haproxy -c` refused, "for debugging"
# (LoadBalancer.upload_haproxy_config, octavia/amphorae/backends/agent/api_server/
# loadbalancer.py: haproxy.cfg.new renamed to haproxy.cfg.new-failed); it is never loaded, and
# goes with the load balancer's directory on delete. Ours keeps none.
REFUSED_COPY = "haproxy.cfg.new-failed"


def tcp_member(vip: str, port: int) -> str:
    """Connect to a TCP listener; the member's first line says who it is."""
    with reach.connect(vip, port, timeout=5) as sock:
        line = sock.makefile("r").readline()
    return json.loads(line)["member"]


def tcp_members_until(vip: str, port: int, member_names: dict[str, str], expected: set[str],
                      settled: Callable, count: int = 6) -> None:
    """Poll (settled) until `count` new connections to a TCP listener reach exactly the members
    `expected`, then check that it holds for twice as many."""
    seen: set[str] = set()

    def reached() -> bool:
        nonlocal seen
        try:
            seen = {member_names[tcp_member(vip, port)] for _ in range(count)}
        except (OSError, ValueError):
            return False
        return seen == expected

    assert settled(reached), seen
    assert {member_names[tcp_member(vip, port)] for _ in range(2 * count)} == expected


def connection_refused(vip: str, port: int) -> bool:
    try:
        reach.connect(vip, port, timeout=3).close()
    except ConnectionRefusedError:
        return True
    return False


def lb_files(amphora_host, lb_id: str) -> dict[str, str]:
    """Every file the agent keeps for lb_id: path -> md5."""
    listing = amphora_host.check_output(
        f"find /var/lib/octavia -path '*{lb_id}*' -type f -exec md5sum {{}} + || true")
    return {path: md5 for md5, path in (line.split(maxsplit=1) for line in listing.splitlines())}


def md5_of(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# --- listeners serve, algorithms show ---------------------------------------------------------


def test_http_listener_round_robin_is_even(load, deploy, vip_url, until, amphora):
    lb = load("http")
    deploy(lb)
    answers = until(vip_url(80), lambda a: len(a) == 3, count=30)
    assert max(answers.values()) - min(answers.values()) <= 1, answers


def test_tcp_listener_serves_every_member(load, deploy, vip, member_names):
    lb = load("tcp")
    deploy(lb)
    seen = {member_names[tcp_member(vip, 9000)] for _ in range(12)}
    assert seen == {"m1", "m2"}


def test_weights_are_proportional(load, deploy, vip_url, until):
    lb = load("http")
    for member, weight in zip(lb.listeners[0].pools[0].members, (1, 2, 3), strict=True):
        member.weight = weight
    deploy(lb)
    answers = until(vip_url(80), lambda a: len(a) == 3, count=60)
    for name, expected in (("m1", 10), ("m2", 20), ("m3", 30)):
        assert abs(answers[name] - expected) <= 2, answers


def test_source_ip_sticks_to_one_member(load, deploy, vip_url, until, who_answers):
    lb = load("http")
    lb.listeners[0].pools[0].algorithm = Algorithm.SOURCE_IP
    deploy(lb)
    until(vip_url(80), lambda a: len(a) == 1, count=5)
    assert len(who_answers(vip_url(80), 20)) == 1


def test_backup_member_serves_only_when_the_others_are_down(load, deploy, vip_url, until,
                                                            who_answers):
    lb = load("http")
    pool = lb.listeners[0].pools[0]
    pool.members[2].backup = True
    pool.health_monitor = HealthMonitor(type="TCP", delay=1, timeout=1, max_retries=1,
                                        max_retries_down=1)
    controller = deploy(lb)
    until(vip_url(80), lambda a: set(a) == {"m1", "m2"}, count=20)
    assert "m3" not in who_answers(vip_url(80), 20)

    # The first two are replaced by members on a port nothing listens on. (A member's address
    # and port never change in Octavia's API; and haproxy, told to keep its servers' state
    # across reloads as Octavia's config tells it, would keep a changed server's old port.)
    pool.members[:2] = [Member(name=member.name, address=member.address, port=DEAD_PORT)
                        for member in pool.members[:2]]
    controller.update()
    assert until(vip_url(80), lambda a: set(a) == {"m3"}) == {"m3": 12}


# --- every change takes effect after a push ---------------------------------------------------


def test_add_remove_drain_reweigh_and_switch_algorithm(load, deploy, vip_url, until, addresses):
    lb = load("http")
    pool = lb.listeners[0].pools[0]
    m3 = pool.members.pop()
    controller = deploy(lb)
    url = vip_url(80)
    until(url, lambda a: set(a) == {"m1", "m2"})

    pool.members.append(m3)
    controller.update()
    until(url, lambda a: set(a) == {"m1", "m2", "m3"})

    del pool.members[0]
    controller.update()
    until(url, lambda a: set(a) == {"m2", "m3"})

    pool.members[0].weight = 0  # drain m2
    controller.update()
    until(url, lambda a: set(a) == {"m3"})

    pool.members[0].weight = 1
    pool.members.append(Member(name="m1", address=addresses["m1"], port=8080, weight=4))
    controller.update()
    answers = until(url, lambda a: a["m1"] == 4 * a["m2"] == 4 * a["m3"], count=18)
    assert answers == {"m1": 12, "m2": 3, "m3": 3}

    pool.algorithm = Algorithm.SOURCE_IP
    controller.update()
    until(url, lambda a: len(a) == 1)


def test_a_new_listener_serves_after_the_push(load, deploy, vip, vip_url, until, settled,
                                              addresses, member_names):
    lb = load("http")
    controller = deploy(lb)
    until(vip_url(80), lambda a: len(a) == 3)
    assert connection_refused(vip, 9000)

    pool = Pool(members=[Member(address=addresses["m2"], port=9000)])
    lb.listeners.append(Listener(protocol=ListenerProtocol.TCP, port=9000, pools=[pool],
                                 default_pool_id=pool.id))
    controller.update()
    tcp_members_until(vip, 9000, member_names, {"m2"}, settled)
    until(vip_url(80), lambda a: len(a) == 3)


def test_no_request_fails_during_consecutive_pushes(load, deploy, vip_url, until):
    lb = load("http")
    controller = deploy(lb)
    until(vip_url(80), lambda a: len(a) == 3)
    members = lb.listeners[0].pools[0].members
    # A request every 10 ms: a push to our agent takes about 50 ms here, so every push meets
    # several requests (at 50 ms, 20 pushes fit between 19 of them).
    with TimelineRecorder(vip_url(80), interval=0.01, timeout=5.0) as recorder:
        for push in range(PUSHES_UNDER_LOAD):
            members[push % 3].weight = 1 + push % 4
            recorder.mark(f"push {push}")
            controller.update()
        timeline = recorder.stop()
    during = timeline.ordered(since=timeline.event("push 0"))
    assert len(during) >= 2 * PUSHES_UNDER_LOAD, "traffic did not flow during the pushes"
    assert timeline.failures() == []
    assert len({sample.member for sample in timeline.samples}) == 3


# --- invalid configs ------------------------------------------------------------------------


@pytest.mark.parametrize("path", INVALID_CONFIGS, ids=lambda p: p.stem)
def test_an_invalid_config_is_refused_and_changes_nothing(path: Path, load, deploy, amphora,
                                                          amphora_host, vip_url, until):
    lb = load("http")
    deploy(lb)
    until(vip_url(80), lambda a: len(a) == 3)
    before = amphora.client.get_config(lb.id)
    files_before = lb_files(amphora_host, lb.id)
    expected = path.read_text().splitlines()[1].removeprefix("# expect: ")

    with pytest.raises(AmphoraAPIError) as caught:
        amphora.client.upload_config(lb.id, path.read_text())

    assert caught.value.status == 400
    assert caught.value.message == "Invalid request"
    assert expected in str(caught.value.details)
    assert amphora.client.get_config(lb.id) == before
    files_after = lb_files(amphora_host, lb.id)
    # Nothing that haproxy loads changed. A copy of the refused config kept for debugging
    # (Octavia's agent keeps one) may appear, and must then be exactly what was refused.
    refused_copies = {path: md5 for path, md5 in files_after.items()
                      if path.endswith("/" + REFUSED_COPY) and path not in files_before}
    assert list(refused_copies.values()) in ([], [md5_of(path.read_text())]), refused_copies
    assert {path: md5 for path, md5 in files_after.items()
            if path not in refused_copies} == files_before
    until(vip_url(80), lambda a: len(a) == 3)


# --- delete, agent restart, several load balancers ------------------------------------------


def test_delete_closes_ports_and_removes_files(load, deploy, amphora, amphora_host, vip,
                                               vip_url, until):
    lb = load("http")
    controller = deploy(lb)
    until(vip_url(80), lambda a: len(a) == 3)
    assert lb_files(amphora_host, lb.id)

    controller.delete()

    assert connection_refused(vip, 80)
    with pytest.raises(AmphoraAPIError) as caught:
        amphora.client.get_config(lb.id)
    assert caught.value.status == 404
    assert lb_files(amphora_host, lb.id) == {}
    assert lb.listeners[0].id not in {x["uuid"] for x in amphora.client.get_listeners()}


def test_load_balancers_survive_an_agent_restart(load, deploy, lab, amphora, vip, vip_url,
                                                 until, member_names):
    http_lb, tcp_lb = load("http"), load("tcp")
    deploy(http_lb)
    deploy(tcp_lb)
    until(vip_url(80), lambda a: len(a) == 3)

    injector = FaultInjector(lab)
    kill = injector.kill_agent(amphora)  # FaultError if no agent process was there to kill
    # The amphora's init restarts the agent; the heal waits (bounded, scaled) until it answers.
    injector.heal(kill)
    # /info names the amphora by its hostname (Octavia's /info has no uuid; ours adds one).
    assert amphora.client.get_info()["hostname"] == amphora.node.spec.hostname

    until(vip_url(80), lambda a: len(a) == 3)
    assert member_names[tcp_member(vip, 9000)] in {"m1", "m2"}
    listeners = {x["uuid"]: x["status"] for x in amphora.client.get_listeners()}
    for lb in (http_lb, tcp_lb):
        assert listeners[lb.listeners[0].id] == "ACTIVE"


def test_load_balancers_on_one_amphora_are_independent(load, deploy, vip, vip_url, until,
                                                       settled, member_names):
    http_lb, tcp_lb = load("http"), load("tcp")
    http_controller, tcp_controller = deploy(http_lb), deploy(tcp_lb)
    until(vip_url(80), lambda a: len(a) == 3)

    tcp_lb.listeners[0].pools[0].members.pop()  # only m1 left behind the TCP listener
    tcp_controller.update()
    tcp_members_until(vip, 9000, member_names, {"m1"}, settled)
    until(vip_url(80), lambda a: len(a) == 3)

    http_controller.delete()
    assert connection_refused(vip, 80)
    assert member_names[tcp_member(vip, 9000)] == "m1"
