"""The MASTER's make-before-break handover at shutdown (amphora_agent/vrrp_handover.py, run by
images/amphora/amphora-init), on a pair of local agents with real keepalived and haproxy.

What is shown is behaviour, not time: after the handover has stopped the MASTER's keepalived (so
the VIP is gone from its VIP interface) and before the peer has taken over, a client whose ARP
cache points at the old MASTER is still answered by it, and nobody answers ARP for the VIP;
once the peer advertises, the old MASTER lets go of everything it added. A BACKUP and a SINGLE
amphora skip it and change nothing.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from amphora_agent import vrrp_handover
from amphora_agent.iproute import ip_json
from harness.polling import poll_until
from tests.support.netns_lab import NetnsLab, Port
from tests.support.vrrp_pair import (
    CLIENT,
    GATEWAY,
    SUBNET,
    VIP,
    VRRP_ID,
    VRRP_IPS,
    keepalived_config,
    start_pair,
)

pytestmark = pytest.mark.netns

LISTEN_PORT = 8080
SETTLE_TIMEOUT_S = 40.0
HANDOVER_EXIT_TIMEOUT_S = 30.0
LINE_TIMEOUT_S = 20.0
ARP_LISTEN_S = 1.0
ARP_SYSCTL_KEYS = ("net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce")

# Run in the client's namespace: broadcast one ARP request for argv[1] from argv[2] and print,
# as JSON, the sender MACs of the replies for it that arrive within argv[3] seconds.
_ARP_WHO_HAS = """
import json, select, socket, sys, time
target, ifname, listen = sys.argv[1], sys.argv[2], float(sys.argv[3])
own_ip = sys.argv[4]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
sock.bind((ifname, 0x0806))
mac = sock.getsockname()[4]
request = (b"\\xff" * 6 + mac + b"\\x08\\x06" + b"\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01"
           + mac + socket.inet_aton(own_ip) + b"\\x00" * 6 + socket.inet_aton(target))
sock.send(request)
answers = set()
deadline = time.monotonic() + listen
while (remaining := deadline - time.monotonic()) > 0:
    if not select.select([sock], [], [], remaining)[0]:
        break
    frame = sock.recv(2048)
    if frame[20:22] == b"\\x00\\x02" and frame[28:32] == socket.inet_aton(target):
        answers.add(frame[22:28].hex(":"))
print(json.dumps(sorted(answers)))
"""


@dataclass
class Amphora:
    name: str
    agent: object
    namespace: str
    port: Port

    def addresses(self, ifname: str) -> set[str]:
        return {info["local"] for link in ip_json(self.namespace, "addr", "show", "dev", ifname)
                for info in link["addr_info"]}

    def holds_vip(self) -> bool:
        return VIP in self.addresses("eth1")

    def keepalived(self) -> list[psutil.Process]:
        """keepalived's parent and its VRRP process (started on this agent's pid file); not
        their children, which are check-script runs that come and go every interval."""
        pid_file = self.agent.base_path / "vrrp" / "octavia-keepalived.pid"
        main = psutil.Process(int(pid_file.read_text().split()[0]))
        return [main, *main.children()]

    def sysctls(self) -> dict[str, str]:
        out = subprocess.run(["ip", "netns", "exec", self.namespace, "sysctl", *ARP_SYSCTL_KEYS],
                             capture_output=True, text=True, check=True).stdout
        return dict(line.split(" = ", 1) for line in out.splitlines())


@dataclass
class Pair:
    lab: NetnsLab
    amphorae: tuple[Amphora, Amphora]
    client: str

    def settled(self) -> tuple[Amphora, Amphora]:
        """(MASTER, BACKUP) once exactly one holds the VIP and answers on it."""
        holders: list[Amphora] = []

        def one_holder() -> bool:
            holders[:] = [amphora for amphora in self.amphorae if amphora.holds_vip()]
            return len(holders) == 1 and self.answer() == holders[0].name

        assert poll_until(one_holder, SETTLE_TIMEOUT_S, interval=0.2), \
            "the pair did not settle on one MASTER"
        master = holders[0]
        return master, next(amphora for amphora in self.amphorae if amphora is not master)

    def answer(self) -> str:
        return self.lab.http_get(self.client, f"http://{VIP}:{LISTEN_PORT}/")

    def arp_answers(self) -> list[str]:
        """MACs answering a broadcast ARP request for the VIP from the client."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.client, sys.executable, "-c", _ARP_WHO_HAS, VIP,
             "eth0", str(ARP_LISTEN_S), CLIENT.split("/")[0]],
            capture_output=True, text=True, check=True, timeout=ARP_LISTEN_S + 20).stdout
        return json.loads(out)


@pytest.fixture
def pair(agent_factory, lab) -> Pair:
    lb_id, listener_id = str(uuid.uuid4()), str(uuid.uuid4())
    amphorae = [Amphora(node.name, node.agent, node.namespace, node.port)
                for node in start_pair(agent_factory, lab, lb_id, listener_id, LISTEN_PORT)]
    return Pair(lab, tuple(amphorae), lab.add_client(CLIENT))


class Handover:
    """`python3 -m amphora_agent.vrrp_handover` for one agent, as amphora-init runs it."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "amphora_agent.vrrp_handover", "--config-file",
             str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []

    def wait_for_line(self, start: str) -> str:
        """The first line of its output starting with `vrrp_handover: ` + start."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + LINE_TIMEOUT_S
            while time.monotonic() < deadline:
                if not selector.select(deadline - time.monotonic()):
                    break
                line = self.process.stdout.readline()
                if not line:
                    break
                self.lines.append(line.rstrip())
                if line.startswith(f"vrrp_handover: {start}"):
                    return line.rstrip()
        pytest.fail(f"no line starting {start!r}; output: {self.lines}")

    def finish(self) -> tuple[int, list[str]]:
        out, _ = self.process.communicate(timeout=HANDOVER_EXIT_TIMEOUT_S)
        return self.process.returncode, [*self.lines, *out.splitlines()]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def _signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        process.send_signal(signum)



def test_stopped_master_answers_on_the_vip_until_the_peer_takes_over(pair):
    master, backup = pair.settled()
    original_sysctls = master.sysctls()
    # The probe finds the MASTER's MAC while keepalived holds the VIP: it can see an answer.
    assert pair.arp_answers() == [master.port.mac]
    # The BACKUP frozen, so that the window between the MASTER's keepalived leaving and the
    # peer taking over stays open for as long as the checks take.
    frozen = backup.keepalived()
    _signal_all(frozen, signal.SIGSTOP)
    handover = Handover(master.agent.config_path)
    try:
        master_keepalived = master.keepalived()
        handover.wait_for_line("keepalived stopped; holding")
        # Held where it is (its wait would end at its bound otherwise) while we look.
        handover.process.send_signal(signal.SIGSTOP)
        assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE
                       for process in master_keepalived)
        assert VIP not in master.addresses("eth1")
        assert VIP in master.addresses("lo"), "the hold ended before the checks began"
        assert not backup.holds_vip()
        # The client's cache still points at the old MASTER, which answers from lo.
        assert pair.answer() == master.name
        # ... and nobody claims the VIP in ARP: the old MASTER no longer answers for it.
        assert pair.arp_answers() == []
        handover.process.send_signal(signal.SIGCONT)
        _signal_all(frozen, signal.SIGCONT)
        returncode, lines = handover.finish()
    finally:
        handover.kill()
        for process in frozen:
            if process.is_running():
                process.send_signal(signal.SIGCONT)
    assert returncode == 0, lines
    assert lines[-1].endswith("released"), lines
    # Released: nothing of the hold is left in the old MASTER's namespace.
    assert VIP not in master.addresses("lo")
    assert master.sysctls() == original_sysctls
    assert poll_until(lambda: backup.holds_vip() and pair.answer() == backup.name,
                      SETTLE_TIMEOUT_S, interval=0.2)
    assert pair.arp_answers() == [backup.port.mac]


def test_handover_ends_when_the_peer_advertises(pair):
    master, backup = pair.settled()
    original_sysctls = master.sysctls()
    handover = Handover(master.agent.config_path)
    try:
        returncode, lines = handover.finish()
    finally:
        handover.kill()
    assert returncode == 0, lines
    # Ended by the BACKUP's first advertisement as MASTER, not by the bound. Which amphora won
    # the first election is keepalived's start-up race (nopreempt keeps the first MASTER).
    peer = VRRP_IPS[pair.amphorae.index(backup)]
    assert lines[-1] == f"vrrp_handover: peer {peer} advertised as MASTER; released", lines
    assert VIP not in master.addresses("lo")
    assert master.sysctls() == original_sysctls
    assert poll_until(lambda: pair.answer() == backup.name, SETTLE_TIMEOUT_S, interval=0.2)


def test_backup_skips_the_handover(pair):
    master, backup = pair.settled()
    original_sysctls = backup.sysctls()
    keepalived = backup.keepalived()
    handover = Handover(backup.agent.config_path)
    try:
        returncode, lines = handover.finish()
    finally:
        handover.kill()
    assert (returncode, lines) == (0, ["vrrp_handover: skipped: the VIP is not held here "
                                       "(BACKUP)"])
    assert all(process.is_running() for process in keepalived)
    assert VIP not in backup.addresses("lo")
    assert backup.sysctls() == original_sysctls
    assert master.holds_vip()


def test_single_amphora_skips_the_handover(agent_factory, lab):
    namespace = lab.namespace("single")
    agent = agent_factory(network_namespace=namespace)
    port = lab.hot_plug()
    agent.client.plug_vip(VIP, {"subnet_cidr": SUBNET, "gateway": GATEWAY,
                                "mac_address": port.mac, "vrrp_ip": VRRP_IPS[0],
                                "mtu": 1500, "host_routes": []})
    lo_before = ip_json(namespace, "addr", "show", "dev", "lo")
    handover = Handover(agent.config_path)
    try:
        returncode, lines = handover.finish()
    finally:
        handover.kill()
    assert (returncode, lines) == (0, ["vrrp_handover: skipped: no keepalived config (SINGLE)"])
    assert ip_json(namespace, "addr", "show", "dev", "lo") == lo_before


# --- the parts without a network -----------------------------------------------------------

def test_settings_from_octavias_config_shape():
    settings = vrrp_handover.parse_settings(
        keepalived_config(Path("/var/lib/octavia"), VRRP_IPS[0], VRRP_IPS[1], priority=100)
        .replace("virtual_ipaddress_excluded {\n", "virtual_ipaddress_excluded {\n        "
                 "2001:db8::10\n"))
    assert settings == vrrp_handover.VrrpSettings(
        addresses=(VIP, "2001:db8::10"), router_ids=frozenset({VRRP_ID}),
        peers=frozenset({VRRP_IPS[1]}), advert_int=1.0, interface="eth1")


@pytest.mark.parametrize(("payload", "source", "expected"), [
    (bytes([0x21, VRRP_ID, 90, 1, 0, 1, 0, 0]), VRRP_IPS[1], True),  # v2, the peer, 90
    (bytes([0x31, VRRP_ID, 90, 1, 0, 100, 0, 0]), VRRP_IPS[1], True),  # v3
    (bytes([0x21, VRRP_ID, 0, 1, 0, 1, 0, 0]), VRRP_IPS[1], False),  # priority 0: leaving
    (bytes([0x21, VRRP_ID + 1, 90, 1, 0, 1, 0, 0]), VRRP_IPS[1], False),  # another router
    (bytes([0x21, VRRP_ID, 90, 1, 0, 1, 0, 0]), "198.19.210.99", False),  # not the peer
    (bytes([0x22, VRRP_ID, 90, 1, 0, 1, 0, 0]), VRRP_IPS[1], False),  # not an advertisement
    (bytes([0x21, VRRP_ID, 90]), VRRP_IPS[1], False),  # truncated
])
def test_peer_advertisement(payload, source, expected):
    settings = vrrp_handover.VrrpSettings(
        addresses=(VIP,), router_ids=frozenset({VRRP_ID}), peers=frozenset({VRRP_IPS[1]}),
        advert_int=1.0, interface="eth1")
    assert vrrp_handover.is_peer_advertisement(payload, source, settings,
                                               own={VRRP_IPS[0], VIP}) is expected


def test_ipv4_raw_packets_lose_their_header():
    header = bytes([0x46]) + bytes(23)  # IHL 6: 24 bytes with options
    assert vrrp_handover.vrrp_payload(vrrp_handover.socket.AF_INET, header + b"vrrp") == b"vrrp"
    assert vrrp_handover.vrrp_payload(vrrp_handover.socket.AF_INET6, b"vrrp") == b"vrrp"


def test_it_acts_only_inside_the_named_namespace(lab):
    """The guard before any sysctl or address change: true inside the namespace, false in the
    one this test runs in (the host's) and for a name that does not exist."""
    namespace = lab.add_client("198.19.210.70/24")
    check = ("import sys; from amphora_agent.vrrp_handover import in_named_namespace; "
             "print(in_named_namespace(sys.argv[1]))")
    inside = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", check,
                             namespace], capture_output=True, text=True, check=True).stdout
    assert inside.strip() == "True"
    assert not vrrp_handover.in_named_namespace(namespace)
    assert not vrrp_handover.in_named_namespace(f"no-such-{os.getpid()}")
