"""Wire compatibility, checked with the real thing: OpenStack Octavia's own amphora driver
(HaproxyAmphoraLoadBalancerDriver, its REST client and its jinja templates, from the `octavia`
package on PyPI) drives our agent over mutual TLS, and real haproxy serves what Octavia rendered.

The driver runs in its own virtualenv (`.venv-octavia`, made by scripts/bootstrap) through
harness.drivers.octavia_driver, so Octavia's dependencies never meet the project's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from harness.amphora_api.pki import LabPKI
from harness.drivers import octavia_driver
from harness.drivers.octavia_driver import DriverSettings, OctaviaDriver
from tests.support import vrrp_pair as pair
from tests.support.vip_answers import settled_master

LOOPBACK = "127.0.0.1"
# Octavia renders an unlimited listener as maxconn 50000, for which haproxy wants about 125,000
# file descriptors and refuses to start below that (strict-limits). A VM amphora allows that;
# a test host may not (this project's CI host stops at 20,000), so listeners here are limited.
CONNECTION_LIMIT = 2000


def settings_for(agent, pki: LabPKI) -> DriverSettings:
    return DriverSettings(client_cert=pki.driver.client_pem, server_ca=pki.driver.ca,
                          bind_port=agent.port, base_path=str(agent.base_path),
                          base_cert_dir=str(agent.cert_dir))


def agent_log_tail(agent) -> Callable[[], str]:
    return lambda: f"the agent's log ends:\n{agent.log()[-3000:]}"


@pytest.fixture
def octavia_python() -> Path:
    if not octavia_driver.available():
        pytest.skip("Octavia's driver is not installed here: `bash scripts/bootstrap` makes "
                    ".venv-octavia")
    return octavia_driver.OCTAVIA_PYTHON


@pytest.fixture
def agent(agent_factory):
    return agent_factory(topology="SINGLE")


@pytest.fixture
def driver(octavia_python: Path, agent, pki: LabPKI) -> Iterator[OctaviaDriver]:
    with OctaviaDriver(octavia_python, context=agent_log_tail(agent)) as probe:
        probe.configure(settings_for(agent, pki))
        yield probe


def lb_spec(agent, listener_port: int, members: list[dict]) -> dict:
    return {
        "id": str(uuid.uuid4()), "vip": LOOPBACK,
        "amphorae": [{"id": agent.amphora_id, "lb_network_ip": LOOPBACK}],
        "listeners": [{"id": str(uuid.uuid4()), "pool_id": str(uuid.uuid4()),
                       "protocol": "HTTP", "port": listener_port, "members": members,
                       "connection_limit": CONNECTION_LIMIT}],
    }


def pool_member(port: int, weight: int = 1) -> dict:
    return {"id": str(uuid.uuid4()), "address": LOOPBACK, "port": port, "weight": weight}


def get(port: int) -> requests.Response:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"http://{LOOPBACK}:{port}/", timeout=5)


def test_octavias_driver_discovers_and_queries_the_agent(driver, agent):
    driver.model(lb_spec(agent, 1, []))
    driver.call("check")  # version discovery: GET / gives api_version 1.0
    info = driver.call("get_info")
    assert info["api_version"] == "1.0" and info["haproxy_version"]
    details = driver.call("client", name="get_details")
    assert details["cpu_count"] >= 1 and "memory" in details


def test_octavias_rendered_config_is_pushed_started_updated_and_deleted(
        driver, agent, http_backend, free_port):
    port = free_port()
    spec = lb_spec(agent, port, [pool_member(http_backend.port)])
    driver.model(spec)
    # Octavia's create flow: render with its templates, upload, then reload (which the agent
    # turns into a start for a load balancer that does not run yet).
    driver.call("update_amphora_listeners")
    assert get(port).status_code == 200
    listener_id = spec["listeners"][0]["id"]
    assert [(x["uuid"], x["status"]) for x in agent.client.get_listeners()] == [
        (listener_id, "ACTIVE")]
    config = agent.client.get_config(spec["id"]).body
    assert f"frontend {listener_id}" in config and "Configuration for loadbalancer" in config

    # An update (a second member) is uploaded and reloaded; both serve.
    spec["listeners"][0]["members"].append(pool_member(http_backend.port, weight=3))
    driver.model(spec)
    driver.call("update_amphora_listeners")
    driver.call("reload")
    assert agent.client.get_config(spec["id"]).body.count("weight 3") == 1
    assert get(port).status_code == 200

    # Deleting the last listener deletes the load balancer's config on the amphora.
    driver.call("delete_listener", listener_id=listener_id)
    assert agent.client.get_listeners() == []
    with pytest.raises(requests.ConnectionError):
        get(port)


def test_octavias_driver_rotates_the_server_certificate(driver, agent, pki: LabPKI):
    driver.model(lb_spec(agent, 1, []))
    rotated = pki.ca.issue_amphora(agent.amphora_id).bundle
    driver.call("upload_cert_amp", pem=rotated.decode())
    # The driver reconnects and checks the new certificate's CN against the amphora id.
    assert driver.call("get_info")["api_version"] == "1.0"


def test_octavias_driver_updates_the_agent_config(driver, agent):
    driver.model(lb_spec(agent, 1, []))
    config = agent.config_path.read_text()
    assert "heartbeat_interval = 10.0" in config
    driver.call("update_amphora_agent_config",
                config=config.replace("heartbeat_interval = 10.0", "heartbeat_interval = 7"))
    assert "heartbeat_interval = 7\n" in agent.config_path.read_text()


# --- an active/standby pair in namespaces, plugged and run by Octavia's driver -------------


@pytest.mark.netns
@pytest.mark.usefixtures("pair_member")
def test_octavias_driver_builds_an_active_standby_pair(octavia_python, agent_factory, pki,
                                                       lab, free_port):
    api_port = free_port()
    agents = [agent_factory(network_namespace=lab.namespace(f"amp{n}"),
                            topology="ACTIVE_STANDBY", host=f"127.0.0.{n + 2}", port=api_port)
              for n in range(2)]
    ports = [lab.hot_plug() for _ in agents]
    listener_port = 8080
    spec = {
        "id": str(uuid.uuid4()), "vip": pair.VIP, "topology": "ACTIVE_STANDBY", "vrrp_id": 71,
        "vip_subnet": {"cidr": pair.SUBNET, "gateway_ip": pair.GATEWAY},
        "amphorae": [{"id": agent.amphora_id, "lb_network_ip": agent.host,
                      "vrrp_ip": pair.VRRP_IPS[n], "role": role, "vrrp_priority": priority}
                     for n, (agent, role, priority)
                     in enumerate(zip(agents, ("MASTER", "BACKUP"), (100, 90), strict=True))],
        "listeners": [{"id": str(uuid.uuid4()), "pool_id": str(uuid.uuid4()),
                       "protocol": "HTTP", "port": listener_port,
                       "connection_limit": CONNECTION_LIMIT,
                       "members": [{"id": str(uuid.uuid4()), "address": pair.MEMBER,
                                    "port": pair.MEMBER_PORT}]}],
    }
    with OctaviaDriver(octavia_python) as probe:
        probe.model(spec)
        # Octavia's create flow for ACTIVE_STANDBY, amphora by amphora: plug the VIP port,
        # push the listeners, learn the VRRP interface, push keepalived.conf, start VRRP.
        for index, (agent, port) in enumerate(zip(agents, ports, strict=True)):
            probe.configure(settings_for(agent, pki))
            probe.context = agent_log_tail(agent)
            probe.call("post_vip_plug", amphora=index, mac_address=port.mac)
            probe.call("update_amphora_listeners", amphora=index)
            assert probe.call("update_vrrp_interface", amphora=index) == "eth1"
            probe.call("update_vrrp_conf", amphora=index)
        for index, agent in enumerate(agents):
            probe.configure(settings_for(agent, pki))
            probe.call("start_vrrp_service", amphora=index)

    client = lab.add_client(pair.CLIENT)
    master = settled_master(client, agents, pair.VIP, listener_port)
    backup = next(agent for agent in agents if agent is not master)
    for agent in agents:
        details = agent.client.get_details()
        assert details["topology"] == "ACTIVE_STANDBY"
        assert details["active"] is (agent is master)
    # Octavia's keepalived.conf runs our check script: the master's haproxy dies, it gives the
    # VIP up and the backup serves.
    haproxy = psutil.Process(int(
        (master.base_path / spec["id"] / f"{spec['id']}.pid").read_text().split()[0]))
    for process in [haproxy, *haproxy.children()]:
        process.kill()
    assert settled_master(client, agents, pair.VIP, listener_port, not_this=master) is backup
