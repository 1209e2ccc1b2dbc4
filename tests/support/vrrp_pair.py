"""An active/standby pair on a test-made VIP network (198.19.210.0/24): its address plan and the
keepalived.conf each amphora gets, in the shape Octavia's driver renders (its values, our text),
and start_pair, which boots one on local agents. Shared by the agent's VRRP, handover and reboot
tests, our controller's pair test and Octavia's driver's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.lb_configs import answering_haproxy_config
from tests.support.local_agent import RunningAgent
from tests.support.netns_lab import NetnsLab, Port

SUBNET = "198.19.210.0/24"
GATEWAY = "198.19.210.1"
VIP = "198.19.210.10"
VRRP_IPS = ("198.19.210.11", "198.19.210.12")
MEMBER = "198.19.210.50"
MEMBER_PORT = 8080
CLIENT = "198.19.210.60/24"
VRRP_ID = 61


def keepalived_config(base_path: Path, own_ip: str, peer_ip: str, priority: int) -> str:
    """keepalived.conf for the amphora at own_ip whose agent keeps its files under base_path."""
    return f"""vrrp_script check_script {{
    script {base_path}/vrrp/check_script.sh
    interval 1
    fall 2
    rise 2
}}

vrrp_instance {VRRP_ID}_pair {{
    interface eth1
    virtual_router_id {VRRP_ID}
    priority {priority}
    nopreempt
    accept
    garp_master_refresh 5
    garp_master_refresh_repeat 2
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass pairpass
    }}

    unicast_src_ip {own_ip}
    unicast_peer {{
        {peer_ip}
    }}

    virtual_ipaddress {{
        {VIP}
    }}

    virtual_ipaddress_excluded {{
    }}

    virtual_routes {{
        {SUBNET} dev eth1 src {VIP} scope link table 1
        default via {GATEWAY} dev eth1 onlink table 1
    }}

    virtual_rules {{
        from {VIP}/32 table 1 priority 100
    }}

    track_script {{
        check_script
    }}
}}
"""


@dataclass(frozen=True)
class PairNode:
    """One amphora of a started pair: its name (what its haproxy answers), agent, namespace and
    VIP port."""

    name: str
    agent: RunningAgent
    namespace: str
    port: Port


def start_pair(agent_factory: Callable[..., RunningAgent], lab: NetnsLab, lb_id: str,
               listener_id: str, listen_port: int) -> list[PairNode]:
    """Two agents of ACTIVE_STANDBY amphorae in namespaces of lab, each with the VIP plugged, a
    haproxy answering its own name on VIP:listen_port, and keepalived started (priority 100 for
    amp1, 90 for amp2: amp1 becomes MASTER)."""
    nodes = []
    for index, name in enumerate(("amp1", "amp2")):
        namespace = lab.namespace(name)
        agent = agent_factory(network_namespace=namespace, topology="ACTIVE_STANDBY")
        port = lab.hot_plug()
        agent.client.plug_vip(VIP, {"subnet_cidr": SUBNET, "gateway": GATEWAY,
                                    "mac_address": port.mac, "vrrp_ip": VRRP_IPS[index],
                                    "mtu": 1500, "host_routes": []})
        agent.client.upload_config(lb_id, answering_haproxy_config(
            agent.base_path, lb_id, listener_id, name, bind=f"{VIP}:{listen_port}"))
        agent.client.start(lb_id)
        nodes.append(PairNode(name, agent, namespace, port))
    for index, node in enumerate(nodes):
        config = keepalived_config(node.agent.base_path, VRRP_IPS[index],
                                   VRRP_IPS[1 - index], priority=100 - index * 10)
        assert node.agent.client.upload_vrrp_config(config) == {"message": "OK"}
    for node in nodes:
        answer = node.agent.client.vrrp_action("start")
        assert answer == {"message": "OK", "details": "keepalived started"}
    return nodes
