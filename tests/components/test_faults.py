"""The link faults of harness.faults.link on a test-made bridge (tests/support/netns_lab.py):
two client
namespaces on one bridge, frames between them dropped by the fault's nft rules, counted, and let
through again after the heal. The bridge and its nft tables live in a namespace of the test's,
so nothing here touches the host's own tables. Also: the faults' argument checks, and the
injector's bookkeeping."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from harness.faults.base import Fault, FaultError
from harness.faults.injector import FaultInjector
from harness.faults.kinds import KINDS
from harness.faults.link import BridgeRules, advert_loss_rules, loss_rules, partition_rules
from harness.lab.host_shell import LocalShell
from harness.lab.host_tables import lab_tables, remove_lab_tables
from tests.support.netns_lab import NetnsLab

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and nft")

A, B = "198.19.220.1", "198.19.220.2"
UDP_PORT = 9999
LISTEN_S = 1.5

# Run in B's namespace: count VRRP packets (IP protocol 112) and UDP datagrams from A for a while.
_RECEIVER = """
import select, socket, sys, time
vrrp = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
counts = {vrrp: 0, udp: 0}
deadline = time.monotonic() + float(sys.argv[2])
while (left := deadline - time.monotonic()) > 0:
    for sock in select.select([vrrp, udp], [], [], left)[0]:
        sock.recv(2048)
        counts[sock] += 1
print(counts[vrrp], counts[udp])
"""
# Run in A's namespace: send n VRRP packets and n UDP datagrams to B.
_SENDER = """
import socket, sys, time
vrrp = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    vrrp.sendto(b"advert", (sys.argv[1], 0))
    udp.sendto(b"data", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.01)
"""


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str
    mac: str


@dataclass(frozen=True)
class Link:
    lab: NetnsLab
    a: Host
    b: Host

    def rules(self, rules: dict[str, list[str]], lab_id: str = "testlab1") -> BridgeRules:
        return BridgeRules(lab_id, "test fault", rules, self.shell)

    @property
    def shell(self) -> LocalShell:
        return LocalShell(self.lab.bridge_namespace)

    def send(self, count: int) -> tuple[int, int]:
        """Send `count` VRRP packets and `count` UDP datagrams from a to b: how many of each
        arrived."""
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.b.namespace, sys.executable, "-c", _RECEIVER,
             str(UDP_PORT), str(LISTEN_S)], stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.stdout.readline().strip() == "ready"
            subprocess.run(["ip", "netns", "exec", self.a.namespace, sys.executable, "-c",
                            _SENDER, self.b.address, str(UDP_PORT), str(count)],
                           check=True, timeout=30)
            output, _ = receiver.communicate(timeout=LISTEN_S + 10)
        finally:
            receiver.kill()
            receiver.wait()
        vrrp, udp = output.split()
        return int(vrrp), int(udp)


def _host(lab: NetnsLab, address: str) -> Host:
    namespace = lab.add_client(f"{address}/24")
    link = subprocess.run(["ip", "-n", namespace, "link", "show", "eth0"], check=True,
                          capture_output=True, text=True).stdout
    return Host(namespace, address, re.search(r"link/ether (\S+)", link).group(1))


@pytest.fixture
def link() -> Iterator[Link]:
    with NetnsLab() as lab:
        a, b = _host(lab, A), _host(lab, B)
        # Static neighbours: the faults drop ARP too, and the counts must not depend on it.
        for here, there in ((a, b), (b, a)):
            subprocess.run(["ip", "-n", here.namespace, "neigh", "replace", there.address,
                            "lladdr", there.mac, "dev", "eth0", "nud", "permanent"], check=True)
        yield Link(lab, a, b)


@needs_root
def test_partition_drops_everything_between_the_two_until_healed(link: Link) -> None:
    assert link.send(5) == (5, 5)
    partition = link.rules(partition_rules(link.a.mac, link.b.mac))
    partition.apply()
    try:
        assert link.send(5) == (0, 0)
        assert partition.dropped() == 10
    finally:
        partition.heal()
    assert partition.table not in lab_tables(link.shell)
    assert link.send(5) == (5, 5)


@needs_root
def test_advert_loss_drops_a_fixed_share_of_vrrp_only(link: Link) -> None:
    adverts = link.rules(advert_loss_rules(link.a.mac, lost=2, every=3))
    adverts.apply()
    try:
        # Exactly one in three gets through, whatever the timing; other traffic is untouched.
        assert link.send(9) == (3, 9)
        assert adverts.dropped() == 6
    finally:
        adverts.heal()


@needs_root
def test_random_loss_can_spare_vrrp(link: Link) -> None:
    loss = link.rules(loss_rules(link.a.mac, 99, spare_vrrp=True))
    loss.apply()
    try:
        vrrp, udp = link.send(20)
    finally:
        loss.heal()
    assert vrrp == 20
    assert udp < 20  # all 20 passing a 99% loss: about 1 in 10^40
    assert link.send(5) == (5, 5)


@needs_root
def test_lab_tables_are_found_and_removed_by_lab(link: Link) -> None:
    shell = link.shell
    mine = link.rules(partition_rules(link.a.mac, link.b.mac), lab_id="0123abcd")
    other = link.rules(partition_rules(link.a.mac, link.b.mac), lab_id="4567cdef")
    for fault in (mine, other):
        fault.apply()
    assert lab_tables(shell) == {mine.table: "0123abcd", other.table: "4567cdef"}
    assert remove_lab_tables("0123abcd", shell=shell) == [mine.table]
    # gc: everything but the labs that still exist.
    assert remove_lab_tables(keep=frozenset({"4567cdef"}), shell=shell) == []
    assert remove_lab_tables(keep=frozenset(), shell=shell) == [other.table]
    assert lab_tables(shell) == {}
    mine.heal()  # healing a table that is gone already is fine
    assert link.send(3) == (3, 3)


@pytest.mark.parametrize("percent", [0, 100, -5])
def test_loss_must_be_a_real_percentage(percent: int) -> None:
    with pytest.raises(FaultError, match="between 1 and 99"):
        loss_rules("02:00:00:00:00:01", percent)


@pytest.mark.parametrize(("lost", "every"), [(0, 3), (3, 3), (4, 3)])
def test_advert_loss_must_let_some_through(lost: int, every: int) -> None:
    with pytest.raises(FaultError, match="cannot lose"):
        advert_loss_rules("02:00:00:00:00:01", lost, every)


class _Recorded(Fault):
    def __init__(self, name: str, log: list[str], heal_fails: bool = False) -> None:
        self.description, self._log, self._heal_fails = name, log, heal_fails

    def apply(self) -> None:
        self._log.append(f"apply {self.description}")

    def heal(self) -> None:
        self._log.append(f"heal {self.description}")
        if self._heal_fails:
            raise FaultError("cannot")


def test_heal_all_heals_newest_first_and_reports_what_failed() -> None:
    log: list[str] = []
    injector = FaultInjector(SimpleNamespace(id="lab"))  # type: ignore[arg-type]
    first = injector.inject(_Recorded("first", log))
    injector.inject(_Recorded("broken", log, heal_fails=True))
    left = injector.inject(_Recorded("left", log))
    injector.leave(left)
    assert injector.heal_all() == ["broken: cannot"]
    assert log == ["apply first", "apply broken", "apply left", "heal broken", "heal first"]
    assert injector.active == []
    injector.inject(first)
    injector.heal(first)
    assert injector.active == [] and log[-1] == "heal first"


def test_a_kind_takes_its_own_options_only_and_fills_in_defaults() -> None:
    kind = KINDS["advert-loss"]
    lab = SimpleNamespace(id="lab", provider=None)
    with pytest.raises(FaultError, match="takes no percent"):
        kind.build(lab, [SimpleNamespace()], percent=5)  # type: ignore[list-item]
    with pytest.raises(FaultError, match="acts on 1, not 2"):
        kind.build(lab, [SimpleNamespace(), SimpleNamespace()])  # type: ignore[list-item]
    assert kind.options_of({"percent": 30, "lost": 1, "delay_ms": 100}) == {"lost": 1}
    with pytest.raises(FaultError, match="needs lb_ids"):
        KINDS["kill-haproxy"].build(lab, [SimpleNamespace()])  # type: ignore[list-item]


def test_a_link_kind_builds_rules_for_the_amphoras_vip_port() -> None:
    vip = SimpleNamespace(network=SimpleNamespace(spec=SimpleNamespace(role="vip")),
                          mac_address="02:00:00:00:00:0a")
    amphora = SimpleNamespace(name="amphora-0", ports=[vip])
    shell = LocalShell("where the lab's bridges are")
    provider = SimpleNamespace(host_shell={"0123abcd": shell}.__getitem__)
    fault = KINDS["advert-loss"].build(SimpleNamespace(id="0123abcd", provider=provider),
                                       [amphora])  # type: ignore[list-item]
    assert isinstance(fault, BridgeRules)
    assert fault.shell is shell  # nft runs where the lab's provider says
    assert fault.table.startswith("amphora_harness_0123abcd_")
    assert fault.rules == advert_loss_rules("02:00:00:00:00:0a", lost=2, every=3)
    assert str(fault) == "2 of 3 adverts of amphora-0 lost"


def test_kill_agent_heal_waits_for_a_slow_restart_and_gives_up_in_bounds(monkeypatch) -> None:
    """The restarted agent may refuse longer than the client's own retries last (Octavia's
    takes as long as at boot): the heal keeps asking, and fails only at its bound."""
    import requests

    import harness.faults.kinds as kinds

    refusals = {"left": 3}
    calls: list[str] = []

    def get_info() -> dict:
        calls.append("info")
        if refusals["left"]:
            refusals["left"] -= 1
            raise requests.ConnectionError("refused")
        return {}

    def exec_(_node, argv):
        calls.append(" ".join(argv))
        return SimpleNamespace(ok=True, output="")

    monkeypatch.setattr(kinds, "AGENT_RESTART_POLL_S", 0.01)
    lab = SimpleNamespace(id="lab", provider=SimpleNamespace(exec=exec_))
    amphora = SimpleNamespace(name="amphora-0", node=None,
                              client=SimpleNamespace(get_info=get_info))
    injector = FaultInjector(lab)  # type: ignore[arg-type]
    fault = injector.inject_kind("kill-agent", amphora)  # type: ignore[arg-type]
    assert calls == [f"pkill -KILL -f {kinds.AGENT_PATTERN}"]
    injector.heal(fault)
    assert calls.count("info") == 4 and injector.active == []

    refusals["left"] = 10**6
    monkeypatch.setattr(kinds, "AGENT_RESTART_TIMEOUT_S", 0.1)
    fault = injector.inject_kind("kill-agent", amphora)  # type: ignore[arg-type]
    with pytest.raises(FaultError, match="did not answer again"):
        injector.heal(fault)
