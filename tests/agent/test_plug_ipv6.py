"""IPv6 on the VIP network: an IPv6 VIP, and an IPv4 VIP with an IPv6 additional VIP (dual
stack), plugged by a real agent into its namespace and reached by clients of each family; the
SR-IOV firewall with IPv6 sources.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.dataplane import ip_json
from tests.support.lb_configs import upload_answering_lb
from tests.support.netns_lab import NetnsLab

pytestmark = pytest.mark.netns

SUBNET6 = "2001:db8:200::/64"
GATEWAY6 = "2001:db8:200::1"
VIP6 = "2001:db8:200::10"
VRRP_IP6 = "2001:db8:200::11"
CLIENT6 = "2001:db8:200::50"
OTHER_CLIENT6 = "2001:db8:200::51"
SUBNET4 = "198.19.220.0/24"
VIP4 = "198.19.220.10"
VRRP_IP4 = "198.19.220.11"
CLIENT4 = "198.19.220.50"
PORT = 8080


def ip6_json(namespace: str, *args: str) -> list[dict]:
    return ip_json(namespace, "-6", *args)


def global_addresses6(namespace: str, ifname: str) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}"
            for link in ip6_json(namespace, "addr", "show", "dev", ifname)
            for a in link["addr_info"] if a.get("scope") == "global"}


def serve(agent, host: str, answer: str) -> None:
    """A load balancer answering answer on host:PORT (an IPv6 host in brackets), started."""
    agent.client.start(upload_answering_lb(agent, host, PORT, answer).lb_id)


def get(lab: NetnsLab, client: str, host: str) -> str:
    return lab.http_get(client, f"http://{host}:{PORT}/")


def test_an_ipv6_vip_is_plugged_routed_and_served(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    port = lab.hot_plug()
    answer = agent.client.plug_vip(VIP6, {"subnet_cidr": SUBNET6, "gateway": GATEWAY6,
                                          "mac_address": port.mac, "vrrp_ip": VRRP_IP6})
    assert answer["details"] == f"VIP {VIP6} plugged on interface eth1"
    assert global_addresses6(namespace, "eth1") == {f"{VRRP_IP6}/64", f"{VIP6}/128"}
    # Replies from the VIP leave through table 1, like IPv4's.
    rules = [r for r in ip6_json(namespace, "rule", "show") if r.get("src") == VIP6]
    assert [(r["table"], r["priority"]) for r in rules] == [("1", 100)]
    table1 = {r["dst"] for r in ip6_json(namespace, "route", "show", "table", "1")}
    assert {"default", SUBNET6} <= table1
    assert agent.client.get_interface(VIP6) == "eth1"

    serve(agent, f"[{VIP6}]", "v6")
    client = lab.add_client(f"{CLIENT6}/64")
    assert get(lab, client, f"[{VIP6}]") == "v6"


def test_dual_stack_vips_each_serve_their_family(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    port = lab.hot_plug()
    agent.client.plug_vip(VIP4, {
        "subnet_cidr": SUBNET4, "gateway": "198.19.220.1", "mac_address": port.mac,
        "vrrp_ip": VRRP_IP4,
        "additional_vips": [{"ip_address": VIP6, "subnet_cidr": SUBNET6, "gateway": GATEWAY6,
                             "host_routes": []}]})
    assert f"{VIP6}/128" in global_addresses6(namespace, "eth1")
    # Each VIP's replies are routed from it, each family in its own rule set.
    rules6 = [r for r in ip6_json(namespace, "rule", "show") if r.get("src") == VIP6]
    assert [r["table"] for r in rules6] == ["1"]
    # One load balancer per family, as Octavia renders a listener per VIP address family.
    serve(agent, VIP4, "dual")
    serve(agent, f"[{VIP6}]", "dual6")
    client4 = lab.add_client(f"{CLIENT4}/24")
    client6 = lab.add_client(f"{CLIENT6}/64")
    assert get(lab, client4, VIP4) == "dual"
    assert get(lab, client6, f"[{VIP6}]") == "dual6"


def test_the_sriov_firewall_filters_ipv6_sources(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    agent.client.plug_vip(VIP6, {"subnet_cidr": SUBNET6, "gateway": GATEWAY6,
                                 "mac_address": lab.hot_plug().mac, "vrrp_ip": VRRP_IP6,
                                 "is_sriov": True})
    serve(agent, f"[{VIP6}]", "v6")
    allowed, other = lab.add_client(f"{CLIENT6}/64"), lab.add_client(f"{OTHER_CLIENT6}/64")
    agent.client.set_interface_rules(VRRP_IP6, [{"protocol": "TCP", "cidr": f"{CLIENT6}/128",
                                                 "port": PORT}])
    assert get(lab, allowed, f"[{VIP6}]") == "v6"
    assert lab.tcp_probe(other, VIP6, PORT) == "unreachable"
    # Neighbour discovery goes on through the firewall: the allowed client still resolves the
    # VIP after its neighbour entry is flushed.
    subprocess.run(["ip", "-n", allowed, "-6", "neigh", "flush", "all"], check=True)
    assert get(lab, allowed, f"[{VIP6}]") == "v6"
