"""Gratuitous ARP and unsolicited neighbour advertisements, as Octavia's agent sends them: after
a start or reload of a load balancer (not in ACTIVE_STANDBY, where keepalived announces the
VIP) for the addresses its config binds, and after plug/network for the port's fixed IPs. A
real agent in its namespace; the packets are captured on the VIP network by a client
namespace."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.lb_configs import upload_answering_lb
from tests.support.vip_network import CLIENT, MEMBER_IP, MEMBER_SUBNET, VIP, VRRP_IP, net_info

pytestmark = pytest.mark.netns

PORT = 8080
SEEN_TIMEOUT_S = 5.0
QUIET_S = 1.5
VIP6 = "2001:db8:230::10"

# Captures on eth0 until a GARP (sender address = target address = the address) or a
# neighbour advertisement for the address arrives, printing it as JSON; prints nothing if none
# came within the timeout. "ready" first, once the socket listens.
_CAPTURE = r"""
import ipaddress, json, socket, struct, sys, time
ifname, address, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sock.bind((ifname, 0))
print("ready", flush=True)
mac = lambda b: ":".join(f"{x:02x}" for x in b)
deadline = time.monotonic() + timeout
while (left := deadline - time.monotonic()) > 0:
    sock.settimeout(left)
    try:
        frame = sock.recv(65536)
    except socket.timeout:
        break
    kind = struct.unpack("!H", frame[12:14])[0]
    if kind == 0x0806:
        op, = struct.unpack("!H", frame[20:22])
        sha, spa, tha, tpa = frame[22:28], frame[28:32], frame[32:38], frame[38:42]
        if socket.inet_ntoa(spa) == address == socket.inet_ntoa(tpa):
            print(json.dumps({"kind": "arp", "eth_dst": mac(frame[0:6]),
                              "eth_src": mac(frame[6:12]), "op": op, "sha": mac(sha),
                              "tha": mac(tha)}))
            break
    elif kind == 0x86DD and frame[20] == 58 and frame[54] == 136:
        target = str(ipaddress.ip_address(frame[62:78]))
        if target == str(ipaddress.ip_address(address)):
            print(json.dumps({
                "kind": "na", "src": str(ipaddress.ip_address(frame[22:38])),
                "dst": str(ipaddress.ip_address(frame[38:54])), "hop_limit": frame[21],
                "flags": struct.unpack("!I", frame[58:62])[0], "option": frame[78],
                "option_mac": mac(frame[80:86]), "eth_src": mac(frame[6:12])}))
            break
"""


@contextlib.contextmanager
def capturing(namespace: str, address: str, timeout: float = SEEN_TIMEOUT_S) -> Iterator[dict]:
    """What was seen for address on namespace's eth0 during and after the block (at most
    timeout seconds from its start): the packet's fields, or {} if none came."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", _CAPTURE, "eth0", address,
         str(timeout)], stdout=subprocess.PIPE, text=True)
    seen: dict = {}
    try:
        assert process.stdout.readline().strip() == "ready"
        yield seen
        out, _ = process.communicate(timeout=timeout + 10)
        seen.update(json.loads(out) if out.strip() else {})
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def garp(mac: str) -> dict:
    return {"kind": "arp", "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_src": mac, "op": 1, "sha": mac,
            "tha": "ff:ff:ff:ff:ff:ff"}


def test_start_and_reload_announce_the_vip_in_single(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="SINGLE")
    port = lab.hot_plug()
    client = lab.add_client(CLIENT)
    with capturing(client, VIP, QUIET_S) as seen:
        agent.client.plug_vip(VIP, net_info(port.mac))
    assert seen == {}  # Octavia's agent sends none at VIP plug
    lb = upload_answering_lb(agent, VIP, PORT, "a")

    with capturing(client, VIP) as seen:
        agent.client.start(lb.lb_id)
    assert seen == garp(port.mac)
    with capturing(client, VIP) as seen:
        agent.client.reload(lb.lb_id)
    assert seen == garp(port.mac)
    with capturing(client, VIP, QUIET_S) as seen:
        agent.client.stop(lb.lb_id)
    assert seen == {}


def test_active_standby_leaves_announcing_to_keepalived(agent_factory, lab):
    """In ACTIVE_STANDBY nothing is announced at start, not even an address the amphora holds
    (its VRRP address here; the VIP itself is keepalived's to add)."""
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="ACTIVE_STANDBY")
    port = lab.hot_plug()
    client = lab.add_client(CLIENT)
    agent.client.plug_vip(VIP, net_info(port.mac))
    lb = upload_answering_lb(agent, VRRP_IP, PORT, "a")
    with capturing(client, VRRP_IP, QUIET_S) as seen:
        agent.client.start(lb.lb_id)
    assert seen == {}


def test_plug_network_announces_the_ports_fixed_ips(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="ACTIVE_STANDBY")
    vip_port, member_port = lab.hot_plug(), lab.hot_plug()
    client = lab.add_client(CLIENT)
    agent.client.plug_vip(VIP, net_info(vip_port.mac))
    port_info = {"mac_address": member_port.mac,
                 "fixed_ips": [{"ip_address": MEMBER_IP, "subnet_cidr": MEMBER_SUBNET}]}
    with capturing(client, MEMBER_IP) as seen:
        agent.client.plug_network(port_info)
    assert seen == garp(member_port.mac)
    with capturing(client, MEMBER_IP) as seen:  # an update of the plugged port too
        assert agent.client.plug_network(port_info)["details"].startswith("Updated")
    assert seen == garp(member_port.mac)


def test_an_ipv6_vip_gets_an_unsolicited_neighbour_advertisement(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="SINGLE")
    port = lab.hot_plug()
    client = lab.add_client("2001:db8:230::50/64")
    agent.client.plug_vip(VIP6, {"subnet_cidr": "2001:db8:230::/64",
                                 "gateway": "2001:db8:230::1", "mac_address": port.mac,
                                 "vrrp_ip": "2001:db8:230::11"})
    lb = upload_answering_lb(agent, f"[{VIP6}]", PORT, "a")
    with capturing(client, VIP6) as seen:
        agent.client.start(lb.lb_id)
    assert seen == {"kind": "na", "src": VIP6, "dst": "ff02::1", "hop_limit": 255,
                    "flags": 0xA0000000, "option": 2, "option_mac": port.mac,
                    "eth_src": port.mac}
