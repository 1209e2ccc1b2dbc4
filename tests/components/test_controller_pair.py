"""The controller's create flow with plugging, for one amphora and for an active/standby pair,
against real agents whose data planes live in namespaces on a test-made VIP network
(tests/support/netns_lab.py). A member and a client sit on the same network in namespaces of
their own.
"""

from __future__ import annotations

import os

import pytest

from harness.drivers.controller import LoadBalancerController
from harness.model.loadbalancer import (
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    Pool,
    VipPort,
    VipSubnet,
)
from tests.support.netns_lab import NetnsLab
from tests.support.vip_answers import first_answer, settled_master, vip_holders
from tests.support.vrrp_pair import CLIENT, GATEWAY, MEMBER, MEMBER_PORT, SUBNET, VIP, VRRP_IPS

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

VIP_SUBNET = VipSubnet(cidr=SUBNET, gateway=GATEWAY)


def http_lb(topology: str) -> LoadBalancer:
    pool = Pool(members=[Member(address=MEMBER, port=MEMBER_PORT)])
    listener = Listener(protocol=ListenerProtocol.HTTP, port=80, pools=[pool],
                        default_pool_id=pool.id)
    return LoadBalancer(vip_address=VIP, topology=topology, listeners=[listener])


def start_agents(agent_factory, lab: NetnsLab, topology: str, count: int):
    return [
        agent_factory(network_namespace=lab.namespace(f"amp{n}"), topology=topology)
        for n in range(count)
    ]


def test_single_amphora_create_plugs_the_vip_and_serves(agent_factory, lab, pair_member):
    (agent,) = start_agents(agent_factory, lab, "SINGLE", 1)
    lb = http_lb("SINGLE")
    port = lab.hot_plug()
    controller = LoadBalancerController(lb, [agent.client], paths=agent.amphora_paths())
    controller.create([VipPort(mac_address=port.mac, vrrp_ip=VRRP_IPS[0], subnet=VIP_SUBNET)])
    client = lab.add_client(CLIENT)
    assert first_answer(client, VIP, 80) == {"amphora": agent.amphora_id, "member": pair_member}
    controller.delete()
    assert lab.tcp_probe(client, VIP, 80) == "refused"


def test_active_standby_create_serves_from_the_master(agent_factory, lab, pair_member):
    agents = start_agents(agent_factory, lab, "ACTIVE_STANDBY", 2)
    lb = http_lb("ACTIVE_STANDBY")
    ports = [lab.hot_plug() for _ in agents]
    controller = LoadBalancerController(
        lb, [a.client for a in agents], paths={a.amphora_id: a.amphora_paths() for a in agents}
    )
    controller.create([
        VipPort(mac_address=port.mac, vrrp_ip=vrrp_ip, subnet=VIP_SUBNET)
        for port, vrrp_ip in zip(ports, VRRP_IPS, strict=True)
    ])
    client = lab.add_client(CLIENT)
    master = settled_master(client, agents, VIP, 80)
    assert first_answer(client, VIP, 80) == {"amphora": master.amphora_id, "member": pair_member}
    assert vip_holders(agents, VIP) == [master.amphora_id]
    # Both run haproxy for the listener: the backup's binds the VIP it does not hold.
    for agent in agents:
        assert [(x["uuid"], x["status"]) for x in agent.client.get_listeners()] == [
            (lb.listeners[0].id, "ACTIVE")]
    # An update reaches both and keeps serving.
    lb.listeners[0].pools[0].members[0].weight = 5
    controller.update()
    for agent in agents:
        assert "weight 5" in agent.client.get_config(lb.id).body
    assert first_answer(client, VIP, 80)["amphora"] == master.amphora_id
    controller.delete()
    assert lab.tcp_probe(client, VIP, 80) != "open"
