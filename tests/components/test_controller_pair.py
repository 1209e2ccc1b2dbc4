"""The controller's create flow with plugging, for one amphora and for an active/standby pair,
against real agents whose data planes live in namespaces on a test-made VIP network
(tests/support/netns_lab.py). A member and a client sit on the same network in namespaces of
their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.amphora_api.client import AmphoraAPIError
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
from harness.polling import poll_until
from harness.render.amphora_configs import AmphoraPaths
from tests.support.netns_lab import NetnsLab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

SUBNET = VipSubnet(cidr="198.19.210.0/24", gateway="198.19.210.1")
VIP = "198.19.210.10"
VRRP_IPS = ("198.19.210.11", "198.19.210.12")
MEMBER = "198.19.210.50"
CLIENT = "198.19.210.60"
MEMBER_PORT = 8080
READY_TIMEOUT_S = 15
# A VRRP election and the gratuitous ARPs after it take a few advert intervals.
VIP_ANSWER_ATTEMPTS = 30
ELECTION_TIMEOUT_S = 30.0

# Run in the client's namespace: GET url and print the answering amphora and member.
_WHO_ANSWERS = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        print(json.dumps({"amphora": response.headers.get("X-Amphora-Id"),
                          "member": json.loads(response.read())["member"]}))
except OSError as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.fixture
def member(lab):
    """The member server (harness.lab.member_server) in a namespace on the VIP network."""
    with lab.member_server(MEMBER, MEMBER_PORT, "m1") as member_id:
        yield member_id


def who_answers(lab: NetnsLab, client: str, port: int) -> dict:
    output = subprocess.run(
        ["ip", "netns", "exec", client, sys.executable, "-c", _WHO_ANSWERS,
         f"http://{VIP}:{port}/"],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout
    return json.loads(output)


def first_answer(lab: NetnsLab, client: str, port: int) -> dict:
    """Poll until the VIP answers (bounded): after a plug or an election it takes a moment."""
    answer: dict = {}
    for _ in range(VIP_ANSWER_ATTEMPTS):
        answer = who_answers(lab, client, port)
        if "error" not in answer:
            return answer
    return answer


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


def paths_of(agent) -> AmphoraPaths:
    return AmphoraPaths(base_path=str(agent.base_path), base_cert_dir=str(agent.cert_dir))


def test_single_amphora_create_plugs_the_vip_and_serves(agent_factory, lab, member):
    (agent,) = start_agents(agent_factory, lab, "SINGLE", 1)
    lb = http_lb("SINGLE")
    port = lab.hot_plug()
    controller = LoadBalancerController(lb, [agent.client], paths=paths_of(agent))
    controller.create([VipPort(mac_address=port.mac, vrrp_ip=VRRP_IPS[0], subnet=SUBNET)])
    client = lab.add_client(f"{CLIENT}/24")
    assert first_answer(lab, client, 80) == {"amphora": agent.amphora_id, "member": member}
    controller.delete()
    assert lab.tcp_probe(client, VIP, 80) == "refused"


def vrrp_master(agents) -> list[str]:
    """Ids of the amphorae whose data plane holds the VIP (asked through the API)."""
    holders = []
    for agent in agents:
        try:
            agent.client.get_interface(VIP)
        except AmphoraAPIError as exc:
            assert exc.status == 404
            continue
        holders.append(agent.amphora_id)
    return holders


def settled_master(lab: NetnsLab, client: str, agents, port: int = 80, not_this=None):
    """The agent that holds the VIP once exactly one (other than not_this) does and the VIP
    answers through it (bounded). An answer that names its amphora (our haproxy.cfg adds
    X-Amphora-Id; Octavia's does not) must name the holder.

    Which amphora wins the first election is not fixed: both keepalived start as BACKUP with
    nopreempt (as Octavia configures them), and whichever Master_Down timer fires first takes
    the VIP; the priorities only decide it when adverts already flow.
    """
    seen: dict = {}

    def settled() -> bool:
        seen["holders"], seen["answer"] = vrrp_master(agents), who_answers(lab, client, port)
        if len(seen["holders"]) != 1 or "error" in seen["answer"]:
            return False
        holder = seen["holders"][0]
        return ((not_this is None or holder != not_this.amphora_id)
                and seen["answer"].get("amphora") in (None, holder))

    assert poll_until(settled, ELECTION_TIMEOUT_S, 0.2), seen
    return next(a for a in agents if a.amphora_id == seen["holders"][0])


def test_active_standby_create_serves_from_the_master(agent_factory, lab, member):
    agents = start_agents(agent_factory, lab, "ACTIVE_STANDBY", 2)
    lb = http_lb("ACTIVE_STANDBY")
    ports = [lab.hot_plug() for _ in agents]
    controller = LoadBalancerController(
        lb, [a.client for a in agents], paths={a.amphora_id: paths_of(a) for a in agents}
    )
    controller.create([
        VipPort(mac_address=port.mac, vrrp_ip=vrrp_ip, subnet=SUBNET)
        for port, vrrp_ip in zip(ports, VRRP_IPS, strict=True)
    ])
    client = lab.add_client(f"{CLIENT}/24")
    master = settled_master(lab, client, agents)
    assert first_answer(lab, client, 80) == {"amphora": master.amphora_id, "member": member}
    assert vrrp_master(agents) == [master.amphora_id]
    # Both run haproxy for the listener: the backup's binds the VIP it does not hold.
    for agent in agents:
        assert [(x["uuid"], x["status"]) for x in agent.client.get_listeners()] == [
            (lb.listeners[0].id, "ACTIVE")]
    # An update reaches both and keeps serving.
    lb.listeners[0].pools[0].members[0].weight = 5
    controller.update()
    for agent in agents:
        assert "weight 5" in agent.client.get_config(lb.id).body
    assert first_answer(lab, client, 80)["amphora"] == master.amphora_id
    controller.delete()
    assert lab.tcp_probe(client, VIP, 80) != "open"
