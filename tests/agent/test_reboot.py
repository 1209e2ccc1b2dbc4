"""A reboot of the whole amphora: the agent brings the data plane back by itself.

A reboot is simulated as Docker does a `docker kill` + `docker start` of an amphora container:
every process dies at once (agent, haproxy, keepalived), the data-plane namespace goes (it lived
on /run, a fresh tmpfs at every start), and each hot-plugged port comes back in the default
namespace as a new veth with the same MAC, up, unconfigured by the agent. (Docker also puts the
port's fixed IP on it there; that is left out here, where the default namespace is the host's.)
Then the agent starts again, and the test only reads: traffic from a client namespace, the
data-plane namespace with `ip`, GET /1.0/listeners and /1.0/details, the agent's log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amphora_agent.desired_state import DesiredState
from tests.support import vrrp_pair as pair
from tests.support.amphora_reboot import reboot
from tests.support.dataplane import ip_json
from tests.support.lb_configs import answering_haproxy_config, upload_answering_lb
from tests.support.vip_answers import wait_for_answer
from tests.support.vip_network import CLIENT, MEMBER_IP, MEMBER_SUBNET, VIP, net_info


def data_plane(namespace: str) -> dict:
    """What a reboot must bring back: links (name, MAC, MTU, up), addresses, routes of every
    table, policy rules."""
    links = sorted((link["ifname"], link["address"], link["mtu"], "UP" in link["flags"])
                   for link in ip_json(namespace, "link", "show") if link["ifname"] != "lo")
    addresses = sorted((link["ifname"], a["local"], a["prefixlen"])
                       for link in ip_json(namespace, "addr", "show") if link["ifname"] != "lo"
                       for a in link["addr_info"] if a["family"] == "inet")
    routes = sorted(json.dumps(route, sort_keys=True)
                    for route in ip_json(namespace, "-4", "route", "show", "table", "all")
                    if route.get("table") != "local")
    rules = sorted(json.dumps(rule, sort_keys=True) for rule in ip_json(namespace, "rule"))
    return {"links": links, "addresses": addresses, "routes": routes, "rules": rules}


def restore_lines(agent) -> list[str]:
    """What the agent logged about restoring, message text only."""
    marker = "amphora_agent.restore: "
    return [line.split(marker, 1)[1] for line in agent.log().splitlines() if marker in line]


def listener_statuses(agent) -> dict[str, str]:
    return {item["uuid"]: item["status"] for item in agent.client.get_listeners()}


@pytest.mark.netns
def test_reboot_brings_back_ports_and_the_load_balancers_that_were_running(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    vip_port, member_port = lab.hot_plug(), lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(vip_port.mac))
    agent.client.plug_network({"mac_address": member_port.mac, "mtu": 1480, "fixed_ips": [
        {"ip_address": MEMBER_IP, "subnet_cidr": MEMBER_SUBNET,
         "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "198.19.201.1"}]}]})
    running = upload_answering_lb(agent, VIP, 8080, "running")
    stopped = upload_answering_lb(agent, VIP, 8081, "stopped")
    deleted = upload_answering_lb(agent, VIP, 8082, "deleted")
    for lb in (running, stopped, deleted):
        agent.client.start(lb.lb_id)
    agent.client.stop(stopped.lb_id)
    agent.client.delete_lb(deleted.lb_id)
    # Uploaded again under the same id but not started: a deleted load balancer's wish to run
    # must not survive its deletion.
    agent.client.upload_config(deleted.lb_id, answering_haproxy_config(
        agent.base_path, deleted.lb_id, deleted.listener_id, "deleted",
        bind=f"{VIP}:{deleted.port}"))
    client = lab.add_client(CLIENT)
    assert lab.http_get(client, f"http://{VIP}:8080/") == "running"
    before = data_plane(namespace)
    listeners = {running.listener_id: "ACTIVE", stopped.listener_id: "STOPPED",
                 deleted.listener_id: "STOPPED"}
    assert listener_statuses(agent) == listeners

    reboot(agent, lab, namespace, [vip_port, member_port])

    assert lab.http_get(client, f"http://{VIP}:8080/") == "running"
    assert lab.tcp_probe(client, VIP, stopped.port) == "refused"
    assert lab.tcp_probe(client, VIP, deleted.port) == "refused"
    assert listener_statuses(agent) == listeners
    assert data_plane(namespace) == before  # eth1 and eth2 as they were, nothing doubled
    assert agent.client.get_interface(VIP) == "eth1"
    assert agent.client.get_interface(MEMBER_IP) == "eth2"
    restored = restore_lines(agent)
    assert restored == [
        f"port {vip_port.mac} plugged again as eth1",
        f"port {member_port.mac} plugged again as eth2",
        f"load balancer {running.lb_id} started again",
    ]

    # An agent-only restart afterwards finds everything running and restores nothing.
    master = (agent.base_path / running.lb_id / f"{running.lb_id}.pid").read_text()
    agent.restart()
    assert restore_lines(agent) == restored
    assert (agent.base_path / running.lb_id / f"{running.lb_id}.pid").read_text() == master
    assert data_plane(namespace) == before
    assert lab.http_get(client, f"http://{VIP}:8080/") == "running"


@pytest.mark.netns
def test_a_port_gone_during_the_reboot_is_logged_and_the_agent_serves(agent_factory, lab):
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="SINGLE")
    port = lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(port.mac))
    lb = upload_answering_lb(agent, VIP, 8080, "running")
    agent.client.start(lb.lb_id)

    reboot(agent, lab, namespace, [])  # the cloud did not give the port back

    assert any(f"port {port.mac} (eth1) is attached no more" in line
               for line in agent.log().splitlines())
    # haproxy binds the VIP all the same (non-local binds are allowed in the namespace), and
    # the controller can plug a new port through the API.
    assert listener_statuses(agent) == {lb.listener_id: "ACTIVE"}
    new_port = lab.hot_plug()
    agent.client.plug_vip(VIP, net_info(new_port.mac))
    assert lab.http_get(lab.add_client(CLIENT), f"http://{VIP}:8080/") == "running"


@pytest.mark.netns
def test_reboot_starts_keepalived_again(agent_factory, lab):
    """One half of an active/standby pair whose peer never answers: it takes the VIP, and
    after a reboot its keepalived runs and takes it again."""
    namespace = lab.namespace("amp")
    agent = agent_factory(network_namespace=namespace, topology="ACTIVE_STANDBY")
    port = lab.hot_plug()
    agent.client.plug_vip(pair.VIP, {"subnet_cidr": pair.SUBNET, "gateway": pair.GATEWAY,
                                     "mac_address": port.mac, "vrrp_ip": pair.VRRP_IPS[0]})
    lb = upload_answering_lb(agent, pair.VIP, 8080, "pair")
    agent.client.start(lb.lb_id)
    agent.client.upload_vrrp_config(pair.keepalived_config(agent.base_path, pair.VRRP_IPS[0],
                                                           pair.VRRP_IPS[1], priority=100))
    agent.client.vrrp_action("start")
    client = lab.add_client(pair.CLIENT)
    url = f"http://{pair.VIP}:8080/"
    assert wait_for_answer(lab, client, url) == "pair"
    pid_file = agent.base_path / "vrrp" / "octavia-keepalived.pid"
    keepalived_before = pid_file.read_text()

    reboot(agent, lab, namespace, [port])

    assert pid_file.read_text() != keepalived_before
    assert restore_lines(agent) == [f"port {port.mac} plugged again as eth1",
                                    f"load balancer {lb.lb_id} started again",
                                    "keepalived started again"]
    assert wait_for_answer(lab, client, url) == "pair"
    details = agent.client.get_details()
    assert (details["topology_status"], details["active"]) == ("OK", True)


# --- the record itself ------------------------------------------------------------------------


def test_desired_state_records_what_the_api_asked(tmp_path: Path):
    path = tmp_path / "desired_state.json"
    desired = DesiredState(path)
    assert (desired.running_load_balancers(), desired.keepalived_running()) == ([], False)
    desired.set_load_balancer("b", running=True)
    desired.set_load_balancer("a", running=True)
    desired.set_load_balancer("c", running=False)
    desired.set_keepalived(running=True)
    # A fresh reader (the agent after a reboot) sees the same.
    again = DesiredState(path)
    assert (again.running_load_balancers(), again.keepalived_running()) == (["a", "b"], True)
    desired.forget_load_balancer("a")
    desired.set_load_balancer("b", running=False)
    desired.set_keepalived(running=False)
    assert (again.running_load_balancers(), again.keepalived_running()) == ([], False)
    assert [p.name for p in tmp_path.iterdir()] == ["desired_state.json"]  # no temp file left


@pytest.mark.parametrize("content", ["{torn", "[]", '{"load_balancers": 3}'])
def test_an_unreadable_record_restores_nothing_and_is_replaced(tmp_path: Path, content: str):
    path = tmp_path / "desired_state.json"
    path.write_text(content)
    desired = DesiredState(path)
    assert (desired.running_load_balancers(), desired.keepalived_running()) == ([], False)
    desired.set_load_balancer("a", running=True)
    assert json.loads(path.read_text()) == {"load_balancers": {"a": "running"}}
