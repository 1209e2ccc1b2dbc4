"""plug/vip, plug/network and interface lookup: a real agent moves real veth ports into its own
network namespace; results are read back with `ip` and with traffic from a client namespace."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.api_errors import expect_error
from tests.support.dataplane import ip_json, ipv4_addresses
from tests.support.vip_network import (
    CLIENT,
    GATEWAY,
    MEMBER_IP,
    MEMBER_SUBNET,
    SUBNET,
    VIP,
    VRRP_IP,
    net_info,
)

pytestmark = pytest.mark.netns

NO_INTERFACE = "No suitable network interface found"


def routes(namespace: str, table: str = "main") -> set[str]:
    """IPv4 routes of one table as "destination via gateway"."""
    return {f"{r['dst']} via {r.get('gateway', '-')}"
            for r in ip_json(namespace, "-4", "route", "show", "table", "all")
            if r.get("table", "main") == table}


def vip_rules(namespace: str) -> list[dict]:
    return [rule for rule in ip_json(namespace, "rule", "show") if rule.get("src") == VIP]


@pytest.fixture
def agent(agent_factory, lab):
    # retries=1: a 404 "no interface" would otherwise be retried like the driver does.
    return agent_factory(network_namespace=lab.namespace("amp"), topology="SINGLE",
                         client_options={"retries": 1})


def test_plug_vip_single(agent, lab):
    namespace = lab.namespace("amp")
    port = lab.hot_plug()
    answer = agent.client.plug_vip(VIP, net_info(port.mac))
    assert answer == {"message": "OK", "details": f"VIP {VIP} plugged on interface eth1"}
    # Gone from the default namespace, now eth1 in the data plane with its MAC and MTU.
    assert subprocess.run(["ip", "link", "show", port.name], capture_output=True).returncode
    (link,) = ip_json(namespace, "link", "show", "dev", "eth1")
    assert (link["address"], link["mtu"], "UP" in link["flags"]) == (port.mac, 1450, True)
    assert ipv4_addresses(namespace, "eth1") == {f"{VRRP_IP}/24", f"{VIP}/32"}
    assert routes(namespace) >= {f"default via {GATEWAY}", "203.0.113.0/24 via 198.19.200.254"}
    # Replies from the VIP leave through table 1.
    assert routes(namespace, table="1") >= {f"default via {GATEWAY}", f"{SUBNET} via -"}
    assert [(r["table"], r["priority"]) for r in vip_rules(namespace)] == [("1", 100)]
    assert agent.client.get_interface(VIP) == "eth1"
    assert agent.client.get_interface(VRRP_IP) == "eth1"
    # A client on the VIP network reaches the VIP (nothing listens: an RST comes back) but not
    # the agent, which stays in the default namespace.
    client = lab.add_client(CLIENT)
    assert lab.tcp_probe(client, VIP, 1) == "refused"
    assert lab.tcp_probe(client, VIP, agent.port) != "open"


def test_replug_is_idempotent_and_applies_changes(agent, lab):
    namespace = lab.namespace("amp")
    port = lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(port.mac))
    state = (ipv4_addresses(namespace, "eth1"), routes(namespace), routes(namespace, table="1"))
    assert agent.client.plug_vip(VIP, net_info(port.mac))["details"].endswith("eth1")
    assert (ipv4_addresses(namespace, "eth1"), routes(namespace),
            routes(namespace, table="1")) == state
    assert len(vip_rules(namespace)) == 1
    # The agent restarts and the driver re-plugs with new host routes and MTU.
    agent.restart()
    changed = net_info(port.mac, mtu=1400,
                       host_routes=[{"destination": "192.0.2.0/24", "nexthop": GATEWAY}])
    agent.client.plug_vip(VIP, changed)
    assert ip_json(namespace, "link", "show", "dev", "eth1")[0]["mtu"] == 1400
    assert "192.0.2.0/24 via 198.19.200.1" in routes(namespace)
    assert "203.0.113.0/24 via 198.19.200.254" not in routes(namespace)
    assert ipv4_addresses(namespace, "eth1") == {f"{VRRP_IP}/24", f"{VIP}/32"}


def test_active_standby_leaves_the_vip_to_keepalived(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="ACTIVE_STANDBY")
    port = lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(port.mac))
    assert ipv4_addresses(namespace, "eth1") == {f"{VRRP_IP}/24"}
    assert vip_rules(namespace) == []
    assert routes(namespace, table="1") == set()


def test_plug_vip_without_the_interface_is_404(agent, lab):
    error = expect_error(404, NO_INTERFACE, agent.client.plug_vip, VIP,
                         net_info("02:00:00:00:00:01"))
    assert NO_INTERFACE in error.details  # what the driver looks for to retry


@pytest.mark.parametrize(
    ("vip", "body", "message"),
    [
        (VIP, "not a json object", "Invalid subnet information"),
        (VIP, {"subnet_cidr": SUBNET, "gateway": GATEWAY}, "Invalid subnet information"),
        (VIP, {"mac_address": "zz:zz", "subnet_cidr": SUBNET, "gateway": GATEWAY},
         "Invalid subnet information"),
        (VIP, net_info("02:00:00:00:00:02", mtu=10), "Invalid subnet information"),
        ("not-an-ip", net_info("02:00:00:00:00:02"), "Invalid VIP"),
        ("198.19.99.10", net_info("02:00:00:00:00:02"), "Invalid VIP"),
        (VIP, net_info("02:00:00:00:00:02", subnet_cidr="198.19.200.7/24"), "Invalid VIP"),
        (VIP, net_info("02:00:00:00:00:02", gateway="fe80::1"), "Invalid VIP"),
        (VIP, net_info("02:00:00:00:00:02", host_routes=[{"destination": "x"}]), "Invalid VIP"),
        (VIP, net_info("02:00:00:00:00:02", additional_vips=[{"ip_address": 3}]), "Invalid VIP"),
        (VIP, net_info("02:00:00:00:00:02", vrrp_ip="198.19.250.1"), "Invalid VRRP Address"),
        (VIP, net_info("02:00:00:00:00:02", vrrp_ip=12), "Invalid VRRP Address"),
    ],
)
def test_plug_vip_bad_input_is_400(agent, lab, vip, body, message):
    port = lab.hot_plug(mac="02:00:00:00:00:02")
    if isinstance(body, str):
        response = agent.client._session.post(
            f"{agent.client.base_url}/1.0/plug/vip/{vip}", data=body, timeout=10)
        assert (response.status_code, response.json()["message"]) == (400, message)
    else:
        expect_error(400, message, agent.client.plug_vip, vip, body)
    # Nothing was touched: the port is still where the cloud put it.
    assert subprocess.run(["ip", "link", "show", port.name], capture_output=True).returncode == 0


def test_plug_network(agent, lab):
    namespace = lab.namespace("amp")
    vip_port, member_port = lab.hot_plug(), lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(vip_port.mac))
    port_info = {"mac_address": member_port.mac, "mtu": 1480,
                 "fixed_ips": [{"ip_address": MEMBER_IP, "subnet_cidr": MEMBER_SUBNET,
                                "host_routes": [{"destination": "10.99.0.0/16",
                                                 "nexthop": "198.19.201.1"}]}]}
    assert agent.client.plug_network(port_info) == {
        "message": "OK", "details": "Plugged on interface eth2"}
    assert ipv4_addresses(namespace, "eth2") == {f"{MEMBER_IP}/24"}
    assert ip_json(namespace, "link", "show", "dev", "eth2")[0]["mtu"] == 1480
    assert "10.99.0.0/16 via 198.19.201.1" in routes(namespace)
    # The member network's gateway never becomes a default route: that is the VIP's.
    assert {r for r in routes(namespace) if r.startswith("default")} == {
        f"default via {GATEWAY}"}
    assert agent.client.get_interface(MEMBER_IP) == "eth2"
    assert agent.client.plug_network(port_info)["details"] == "Updated existing interface eth2"
    assert ipv4_addresses(namespace, "eth2") == {f"{MEMBER_IP}/24"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"fixed_ips": []}, "Invalid port information"),
        ({"mac_address": "nope"}, "Invalid port information"),
        ({"mac_address": "02:00:00:00:00:03", "mtu": "big"}, "Invalid port information"),
        ({"mac_address": "02:00:00:00:00:03",
          "fixed_ips": [{"ip_address": "300.1.1.1", "subnet_cidr": MEMBER_SUBNET}]},
         "Invalid network port"),
        ({"mac_address": "02:00:00:00:00:03",
          "fixed_ips": [{"ip_address": MEMBER_IP, "subnet_cidr": SUBNET}]},
         "Invalid network port"),
        ({"mac_address": "02:00:00:00:00:03", "fixed_ips": "all"}, "Invalid network port"),
    ],
)
def test_plug_network_bad_input_is_400(agent, body, message):
    expect_error(400, message, agent.client.plug_network, body)


def test_plug_network_without_the_interface_is_404(agent):
    expect_error(404, NO_INTERFACE, agent.client.plug_network,
                 {"mac_address": "02:00:00:00:00:04"})


def test_get_interface_errors(agent, lab):
    expect_error(400, "Invalid IP address", agent.client.get_interface, "not-an-ip")
    # Before anything is plugged (no namespace yet or an empty one) and after.
    expect_error(404, "Error interface not found for IP address",
                 agent.client.get_interface, VIP)
    agent.client.plug_vip(VIP, net_info(lab.hot_plug().mac))
    expect_error(404, "Error interface not found for IP address",
                 agent.client.get_interface, "198.19.200.99")
    # An address of the default namespace (management side) is not a data-plane address.
    host_addresses = [a["local"] for link in json.loads(subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], check=True, capture_output=True, text=True).stdout)
        if link["ifname"] != "lo" for a in link["addr_info"]]
    for address in host_addresses[:1]:
        expect_error(404, "Error interface not found for IP address",
                     agent.client.get_interface, address)
