"""The VIP firewall of SR-IOV ports: plug with is_sriov drops everything, PUT
/1.0/interface/{ip}/rules opens what the rules say, nothing else. Checked with real nftables in
the agent's data-plane namespace and real traffic from a client namespace: a dropped SYN gets no
answer ("unreachable"), where a closed port without the firewall answers with a reset
("refused").
"""

from __future__ import annotations

import subprocess

import pytest

from amphora_agent.vip_firewall import RulesError, parse_rules, render_ruleset
from tests.support.amphora_reboot import reboot
from tests.support.api_errors import expect_error
from tests.support.lb_configs import upload_answering_lb
from tests.support.netns_lab import NetnsLab
from tests.support.vip_answers import wait_for_answer
from tests.support.vip_network import VIP, VRRP_IP, net_info

CLIENT_IP = "198.19.200.50"
OTHER_CLIENT_IP = "198.19.200.51"
LISTENER_PORT = 8080
CLOSED_PORT = 8081  # nobody listens: a reset without the firewall, silence with it


def tcp(port: int, cidr: str | None) -> dict:
    return {"protocol": "TCP", "cidr": cidr, "port": port}


# --- the rules document (no namespace needed) ----------------------------------------------


def test_octavias_rules_are_accepted():
    rules = parse_rules([tcp(80, None), {"protocol": "UDP", "cidr": "10.0.0.0/8", "port": 53.0},
                         {"protocol": "SCTP", "cidr": "2001:db8::/32", "port": 9000},
                         {"protocol": "VRRP", "cidr": "198.19.200.12/32", "port": 112}])
    assert [rule.nft() for rule in rules] == [
        "tcp dport 80 accept",
        "ip saddr 10.0.0.0/8 udp dport 53 accept",
        "ip6 saddr 2001:db8::/32 sctp dport 9000 accept",
        "ip saddr 198.19.200.12/32 meta l4proto 112 accept",
    ]


@pytest.mark.parametrize("document, complaint", [
    ({"protocol": "TCP"}, "must be a JSON list"),
    (["TCP"], "rule 0 is not an object"),
    ([{"protocol": "TCP", "cidr": None}], "missing keys ['port']"),
    ([{**tcp(80, None), "action": "drop"}], "unknown keys ['action']"),
    ([{"protocol": "ICMP", "cidr": None, "port": 1}], "protocol 'ICMP'"),
    ([tcp(0, None)], "port 0"),
    ([tcp(65536, None)], "port 65536"),
    ([tcp(80.5, None)], "port 80.5"),
    ([tcp(float("nan"), None)], "port nan"),
    ([tcp(float("inf"), None)], "port inf"),
    ([{"protocol": "TCP", "cidr": None, "port": "80"}], "port '80'"),
    ([{"protocol": "TCP", "cidr": None, "port": True}], "port True"),
    ([tcp(80, "10.0.0.0/33")], "cidr '10.0.0.0/33'"),
    ([tcp(80, "10.0.0.0/8; flush ruleset")], "cidr"),
    ([{"protocol": "TCP", "cidr": 10, "port": 80}], "cidr 10"),
])
def test_bad_rules_are_refused_with_what_is_wrong(document, complaint):
    with pytest.raises(RulesError) as caught:
        parse_rules(document)
    assert complaint in str(caught.value)


def test_the_drop_all_ruleset_opens_nothing_on_the_vip():
    closed = render_ruleset(None, [])
    assert "policy drop" in closed
    assert "goto" not in closed and "ct state" not in closed
    opened = render_ruleset("eth1", parse_rules([tcp(80, "10.0.0.0/8")]))
    assert 'iifname "eth1" goto amphora_vip_chain' in opened
    assert "ip saddr 10.0.0.0/8 tcp dport 80 accept" in opened


def test_every_rendered_ruleset_passes_nfts_own_check(tmp_path):
    rules = parse_rules([tcp(80, None), tcp(443, "0.0.0.0/0"), tcp(443, "::/0"),
                         {"protocol": "VRRP", "cidr": "fd00::2/128", "port": 112}])
    namespace = f"amphora-harness-nftcheck-{tmp_path.name[-8:]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for index, ruleset in enumerate((render_ruleset(None, []),
                                         render_ruleset("eth1", rules),
                                         render_ruleset("eth1", []))):
            path = tmp_path / f"{index}.rules"
            path.write_text(ruleset)
            result = subprocess.run(["ip", "netns", "exec", namespace, "nft", "-c", "-f",
                                     str(path)], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


# --- a real agent, real nftables, real traffic ---------------------------------------------


@pytest.fixture
def sriov_amphora(agent_factory, lab: NetnsLab):
    """An agent whose VIP port was plugged as SR-IOV, serving one listener on the VIP, and two
    clients on the VIP network."""
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    port = lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(port.mac, is_sriov=True))
    lb = upload_answering_lb(agent, VIP, LISTENER_PORT, "served")
    agent.client.start(lb.lb_id)
    clients = {address: lab.add_client(f"{address}/24") for address in (CLIENT_IP,
                                                                        OTHER_CLIENT_IP)}
    return agent, namespace, port, clients


def probe(lab: NetnsLab, client: str, port: int) -> str:
    return lab.tcp_probe(client, VIP, port)


def rules_file(agent):
    return agent.base_path / "nftables-vip.rules"


@pytest.mark.netns
def test_an_sriov_vip_drops_everything_until_rules_open_it(sriov_amphora, lab):
    agent, _, _, clients = sriov_amphora
    client, other = clients[CLIENT_IP], clients[OTHER_CLIENT_IP]
    assert probe(lab, client, LISTENER_PORT) == "unreachable"

    answer = agent.client.set_interface_rules(VRRP_IP, [tcp(LISTENER_PORT, f"{CLIENT_IP}/32")])
    assert answer == {"message": "OK"}
    assert lab.http_get(client, f"http://{VIP}:{LISTENER_PORT}/") == "served"
    # Only that source, only that port: the other client and a closed port get silence.
    assert probe(lab, other, LISTENER_PORT) == "unreachable"
    assert probe(lab, client, CLOSED_PORT) == "unreachable"

    # Rules are replaced, not added to: now everyone, and still only the listener's port.
    agent.client.set_interface_rules(VRRP_IP, [tcp(LISTENER_PORT, None)])
    assert lab.http_get(other, f"http://{VIP}:{LISTENER_PORT}/") == "served"
    assert probe(lab, other, CLOSED_PORT) == "unreachable"

    # No listener left: nothing is open any more.
    agent.client.set_interface_rules(VRRP_IP, [])
    assert probe(lab, client, LISTENER_PORT) == "unreachable"


@pytest.mark.netns
def test_rejected_rules_change_nothing(sriov_amphora, lab):
    agent, _, _, clients = sriov_amphora
    agent.client.set_interface_rules(VRRP_IP, [tcp(LISTENER_PORT, f"{CLIENT_IP}/32")])
    before = rules_file(agent).read_bytes()
    for bad in ([tcp(LISTENER_PORT, "everyone")], {"not": "a list"}, [tcp(0, None)]):
        error = expect_error(400, "Invalid rules information", agent.client.set_interface_rules,
                             VRRP_IP, bad)
        assert error.details
    assert rules_file(agent).read_bytes() == before
    assert lab.http_get(clients[CLIENT_IP], f"http://{VIP}:{LISTENER_PORT}/") == "served"
    assert probe(lab, clients[OTHER_CLIENT_IP], LISTENER_PORT) == "unreachable"


@pytest.mark.netns
def test_rules_for_an_address_no_interface_holds_are_404(sriov_amphora):
    agent = sriov_amphora[0]
    expect_error(404, "Error interface not found for IP address",
                 agent.client.set_interface_rules, "198.19.200.99", [tcp(80, None)])
    expect_error(400, "Invalid IP address", agent.client.set_interface_rules, "not-an-ip",
                 [tcp(80, None)])


@pytest.mark.netns
def test_a_port_plugged_without_sriov_is_not_filtered(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="SINGLE")
    agent.client.plug_vip(VIP, net_info(lab.hot_plug().mac, is_sriov=False))
    lb = upload_answering_lb(agent, VIP, LISTENER_PORT, "served")
    agent.client.start(lb.lb_id)
    client = lab.add_client(f"{CLIENT_IP}/24")
    assert not rules_file(agent).exists()
    assert lab.http_get(client, f"http://{VIP}:{LISTENER_PORT}/") == "served"
    assert probe(lab, client, CLOSED_PORT) == "refused"


@pytest.mark.netns
def test_is_sriov_must_be_a_boolean(agent_factory, lab):
    agent = agent_factory(network_namespace=lab.namespace("amp"), topology="SINGLE")
    error = expect_error(400, "Invalid subnet information", agent.client.plug_vip, VIP,
                         net_info(lab.hot_plug().mac, is_sriov="yes"))
    assert "is_sriov" in error.details


@pytest.mark.netns
def test_the_firewall_comes_back_after_a_reboot(sriov_amphora, lab):
    agent, namespace, port, clients = sriov_amphora
    agent.client.set_interface_rules(VRRP_IP, [tcp(LISTENER_PORT, f"{CLIENT_IP}/32")])
    # A re-plug of the same SR-IOV port keeps the rules (Octavia's driver re-plugs on retries).
    agent.client.plug_vip(VIP, net_info(port.mac, is_sriov=True))
    assert lab.http_get(clients[CLIENT_IP], f"http://{VIP}:{LISTENER_PORT}/") == "served"

    reboot(agent, lab, namespace, [port])
    assert wait_for_answer(lab, clients[CLIENT_IP], f"http://{VIP}:{LISTENER_PORT}/") == "served"
    assert probe(lab, clients[OTHER_CLIENT_IP], LISTENER_PORT) == "unreachable"
    assert probe(lab, clients[CLIENT_IP], CLOSED_PORT) == "unreachable"

