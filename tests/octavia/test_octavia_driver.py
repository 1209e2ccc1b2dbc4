"""Wire compatibility, checked with the real thing: OpenStack Octavia's own amphora driver
(HaproxyAmphoraLoadBalancerDriver, its REST client and its jinja templates, from the `octavia`
package) drives our agent over mutual TLS through the driver seam
(harness.drivers.octavia_driver), and real haproxy serves what Octavia rendered.

The driver runs in its own virtualenv (harness.drivers.octavia_venv) as a probe process
(harness.drivers.octavia_process), so Octavia's dependencies never meet the project's.
"""

from __future__ import annotations

import os

import psutil
import pytest
import requests

from harness.amphora_api.pki import LabPKI
from harness.model.loadbalancer import (
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    Pool,
    Topology,
    VipPort,
    VipSubnet,
)
from harness.model.yaml_loader import lb_fixture, load_lb
from tests.support.vip_answers import settled_master, vip_holders
from tests.support.vrrp_pair import CLIENT, GATEWAY, MEMBER, MEMBER_PORT, SUBNET, VIP, VRRP_IPS

LISTENER_PORT = 8080


def http_lb(vip: str, *member_ports: int) -> LoadBalancer:
    pool = Pool(members=[Member(address="127.0.0.1", port=port) for port in member_ports])
    return LoadBalancer(vip_address=vip, listeners=[Listener(
        protocol=ListenerProtocol.HTTP, port=LISTENER_PORT, pools=[pool],
        default_pool_id=pool.id)])


def get(vip: str, port: int = LISTENER_PORT) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"http://{vip}:{port}/", timeout=5)


@pytest.fixture
def agent(agent_factory):
    return agent_factory(topology="SINGLE")


def test_octavias_driver_discovers_and_queries_the_agent(octavia_driver, agent, vip_address):
    driver = octavia_driver(LoadBalancer(vip_address=vip_address), [agent])
    driver.call("check", agent.amphora_id)  # version discovery: GET / gives api_version 1.0
    info = driver.call("get_info", agent.amphora_id)
    assert info["api_version"] == "1.0" and info["haproxy_version"]
    details = driver.call("client", agent.amphora_id, name="get_details")
    assert details["cpu_count"] >= 1 and "memory" in details


def test_octavias_rendered_config_is_pushed_started_updated_and_deleted(
        octavia_driver, agent, http_backend, vip_address):
    lb = http_lb(vip_address, http_backend.port)
    driver = octavia_driver(lb, [agent])
    # Octavia's create flow: render with its templates, upload, then reload (which the agent
    # turns into a start for a load balancer that does not run yet).
    driver.create()
    assert get(vip_address).status_code == 200
    listener_id = lb.listeners[0].id
    assert [(x["uuid"], x["status"]) for x in agent.client.get_listeners()] == [
        (listener_id, "ACTIVE")]
    config = agent.client.get_config(lb.id).body
    assert f"frontend {listener_id}" in config and "Configuration for loadbalancer" in config
    # What the driver says it renders is what the agent received.
    assert driver.rendered_configs() == {agent.amphora_id: config}

    # An update (a second member) is uploaded and reloaded; both serve.
    lb.listeners[0].pools[0].members.append(Member(address="127.0.0.1",
                                                   port=http_backend.port, weight=3))
    driver.update()
    assert agent.client.get_config(lb.id).body.count("weight 3") == 1
    assert get(vip_address).status_code == 200

    # Deleting the last listener deletes the load balancer's config on the amphora.
    driver.delete()
    assert agent.client.get_listeners() == []
    with pytest.raises(requests.ConnectionError):
        get(vip_address)


def test_octavias_driver_rotates_the_server_certificate(octavia_driver, agent, pki: LabPKI,
                                                        vip_address):
    driver = octavia_driver(LoadBalancer(vip_address=vip_address), [agent])
    rotated = pki.ca.issue_amphora(agent.amphora_id).bundle
    driver.call("upload_cert_amp", agent.amphora_id, pem=rotated.decode())
    # The driver reconnects and checks the new certificate's CN against the amphora id.
    assert driver.call("get_info", agent.amphora_id)["api_version"] == "1.0"


def test_octavias_driver_updates_the_agent_config(octavia_driver, agent, vip_address):
    driver = octavia_driver(LoadBalancer(vip_address=vip_address), [agent])
    config = agent.config_path.read_text()
    assert "heartbeat_interval = 10\n" in config
    driver.call("update_amphora_agent_config", agent.amphora_id,
                config=config.replace("heartbeat_interval = 10\n", "heartbeat_interval = 7\n"))
    assert "heartbeat_interval = 7\n" in agent.config_path.read_text()


# --- every feature of our model, rendered by Octavia's templates -------------------------------


def test_every_feature_of_our_model_is_rendered_by_octavia_and_served(
        octavia_driver, agent, tenant_ca, vip_address):
    """fixtures/lbs/everything.yaml (all protocols, algorithms, persistence and monitor types,
    rule and compare types, member options, timeouts, limits, headers, CIDRs) on one amphora:
    Octavia's driver renders it, uploads certificates and config, and haproxy runs it."""
    certificates = {name: tenant_ca.issue(f"{name}.example.com").bundle
                    for name in ("default", "site-a")}
    lb = load_lb(lb_fixture("everything"), certificates=certificates, addresses={
        "vip": vip_address, "m1": "198.18.2.11", "m2": "198.18.2.12", "m3": "198.18.2.13"})
    lb.topology = Topology.SINGLE
    driver = octavia_driver(lb, [agent])
    driver.create()

    assert {x["uuid"]: x["status"] for x in agent.client.get_listeners()} == {
        listener.id: "ACTIVE" for listener in lb.listeners}
    config = agent.client.get_config(lb.id).body
    http, https, tcp = lb.listeners
    for line in ("balance roundrobin", "balance leastconn", "balance source",
                 "cookie SRV insert indirect nocache", "stick on src",
                 "stick match req.cook(JSESSIONID)", "option httpchk HEAD /healthz?full=1",
                 "external-check",
                 "timeout client 20000", "timeout connect 3000", "timeout server 20000",
                 "tcp-request inspect-delay 500", "maxconn 1000", "option forwardfor",
                 "http-request set-header X-Forwarded-Port %[dst_port]",
                 "http-request set-header X-Forwarded-Proto https",
                 "redirect code 302 location https://www.example.com:8443/new?from=old",
                 "path_end -m reg", "req.cook(session) -m reg", "req.hdr(User-Agent) -m beg",
                 "weight 0", " backup", " disabled",
                 f"ssl crt-list {agent.cert_dir}/{lb.id}/{https.id}.pem", f"frontend {tcp.id}"):
        assert line in config, line
    # Octavia expands expected codes into a set: their order changes from run to run.
    (codes,) = [line.split()[-1] for line in config.splitlines()
                if "http-check expect rstatus" in line and "301" in line]
    assert set(codes.split("|")) == {"200", "201", "202", "203", "204", "301"}
    for cert in https.certificates:
        stored = driver.certificate_file(cert)
        assert agent.client.get_cert_md5(lb.id, stored.name) == stored.md5
    # Octavia's amphorae do not filter allowed CIDRs (a security group does): nothing of them.
    assert "198.18.0.0/15" not in config and http.allowed_cidrs


# --- an active/standby pair in namespaces, plugged and run by Octavia's driver -------------


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
@pytest.mark.usefixtures("pair_member")
@pytest.mark.parametrize("sriov_vip", [False, True], ids=["vip", "sriov-vip"])
def test_octavias_driver_builds_an_active_standby_pair(octavia_driver, agent_factory, lab,
                                                       free_port, sriov_vip):
    """Octavia's create flow for ACTIVE_STANDBY on two agents whose data planes live in
    namespaces on a test-made VIP network: VIP ports plugged, VRRP configured and started,
    listeners pushed (an SR-IOV VIP: each amphora's firewall opened with the rules Octavia's
    controller builds, VRRP from the peer included); the master serves, and gives the VIP up
    when its haproxy dies for good (Octavia's keepalived.conf runs our check script)."""
    api_port = free_port()
    agents = [agent_factory(network_namespace=lab.namespace(f"amp{n}"),
                            topology="ACTIVE_STANDBY", host=f"127.0.0.{n + 2}", port=api_port)
              for n in range(2)]
    pool = Pool(members=[Member(address=MEMBER, port=MEMBER_PORT)])
    lb = LoadBalancer(vip_address=VIP, topology=Topology.ACTIVE_STANDBY, sriov_vip=sriov_vip,
                      listeners=[Listener(protocol=ListenerProtocol.HTTP, port=LISTENER_PORT,
                                          pools=[pool], default_pool_id=pool.id)])
    driver = octavia_driver(lb, agents)
    subnet = VipSubnet(cidr=SUBNET, gateway=GATEWAY)
    driver.create([VipPort(mac_address=lab.hot_plug().mac, vrrp_ip=vrrp_ip, subnet=subnet)
                   for vrrp_ip in VRRP_IPS])

    client = lab.add_client(CLIENT)
    master = settled_master(client, agents, VIP, LISTENER_PORT)
    backup = next(agent for agent in agents if agent is not master)
    for agent in agents:
        details = agent.client.get_details()
        assert details["topology"] == "ACTIVE_STANDBY"
        assert details["active"] is (agent is master)
        assert "nopreempt" in (agent.base_path / "vrrp" / "octavia-keepalived.conf").read_text()
        rules = agent.base_path / "nftables-vip.rules"
        assert rules.exists() is sriov_vip
        if sriov_vip:
            assert f"tcp dport {LISTENER_PORT} accept" in rules.read_text()
    # The agent starts a killed haproxy again (as systemd does for Octavia's haproxy unit), so
    # the master's agent goes first: a haproxy that stays dead is what makes the check fail.
    master.kill()
    haproxy = psutil.Process(int(
        (master.base_path / lb.id / f"{lb.id}.pid").read_text().split()[0]))
    for process in [haproxy, *haproxy.children()]:
        process.kill()
    assert settled_master(client, [backup], VIP, LISTENER_PORT) is backup
    # Back with its agent (which starts haproxy again), the old master stays backup: nopreempt.
    master.start()
    assert vip_holders(agents, VIP) == [backup.amphora_id]
