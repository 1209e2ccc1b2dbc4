"""Smoke with Octavia's own driver: a lab amphora — the image's agent, on the image's Python
and libraries — is plugged and configured by OpenStack Octavia's HaproxyAmphoraLoadBalancerDriver
(harness.drivers.octavia_driver), and serves Octavia's rendered haproxy.cfg to real traffic.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
import tenacity

from harness.drivers import octavia_driver
from harness.drivers.octavia_driver import DriverSettings, OctaviaDriver
from harness.lab.constants import AGENT_PORT, DATA_PLANE_MTU
from harness.lab.lab import Lab, LabAmphora, LabMember

LISTENER_PORT = 80
# haproxy wants ~2.5 files per connection; Octavia renders an unlimited listener as 50,000
# connections, more than an engine that caps containers' open files (e.g. at 20,000) allows.
CONNECTION_LIMIT = 2000
REQUESTS = 20


@pytest.fixture(scope="module")
def driver(lab: Lab, amphora: LabAmphora) -> Iterator[OctaviaDriver]:
    if not octavia_driver.available():
        pytest.skip("Octavia's driver is not installed here: `bash scripts/bootstrap` makes "
                    ".venv-octavia")
    with OctaviaDriver(context=lambda: lab.provider.logs(amphora.node)[-3000:]) as probe:
        probe.configure(DriverSettings(client_cert=lab.pki.driver.client_pem,
                                       server_ca=lab.pki.driver.ca, bind_port=AGENT_PORT))
        yield probe


@pytest.fixture(scope="module")
def octavia_lb(lab: Lab, amphora: LabAmphora, members: list[LabMember],
               driver: OctaviaDriver) -> dict:
    """Octavia's create flow for a SINGLE load balancer on the lab amphora: VIP port and member
    port plugged, listeners rendered by Octavia's templates, uploaded and started."""
    vip_port = lab.attach_vip_port(amphora)
    vip = str(lab.allocate_vip())
    spec = {
        "id": str(uuid.uuid4()), "vip": vip,
        "vip_subnet": {"cidr": vip_port.subnet.cidr, "gateway_ip": vip_port.subnet.gateway},
        "amphorae": [{"id": amphora.id, "lb_network_ip": str(amphora.mgmt_address),
                      "vrrp_ip": vip_port.vrrp_ip}],
        "listeners": [{"id": str(uuid.uuid4()), "pool_id": str(uuid.uuid4()),
                       "protocol": "HTTP", "port": LISTENER_PORT,
                       "connection_limit": CONNECTION_LIMIT,
                       "members": [{"id": str(uuid.uuid4()), "address": str(m.address),
                                    "port": m.port("http")} for m in members]}],
    }
    driver.model(spec)
    driver.call("post_vip_plug", mac_address=vip_port.mac_address, mtu=DATA_PLANE_MTU)
    member_port = lab.attach_port(amphora, "member")
    plan = lab.plan("member")
    driver.call("post_network_plug", mac_address=member_port.mac_address,
                ip_address=str(member_port.ip_address), cidr=str(plan.subnet),
                mtu=DATA_PLANE_MTU)
    driver.call("update_amphora_listeners")
    return spec


def answering_members(url: str, count: int) -> set[str]:
    with requests.Session() as session:
        session.trust_env = False
        return {session.get(url, headers={"Connection": "close"}, timeout=5).json()["member"]
                for _ in range(count)}


def test_octavias_driver_configures_a_lab_amphora_that_serves(octavia_lb: dict, lab: Lab,
                                                              amphora: LabAmphora,
                                                              members: list[LabMember],
                                                              driver: OctaviaDriver) -> None:
    url = f"http://{octavia_lb['vip']}:{LISTENER_PORT}/"
    # The first request may race the reload's new worker: retried, bounded.
    served = tenacity.Retrying(stop=tenacity.stop_after_attempt(20),
                               wait=tenacity.wait_fixed(0.25), reraise=True)(
        answering_members, url, REQUESTS)
    assert served == {m.id for m in members}
    listener_id = octavia_lb["listeners"][0]["id"]
    assert [(x["uuid"], x["status"]) for x in amphora.client.get_listeners()] == [
        (listener_id, "ACTIVE")]
    assert driver.call("get_interface_from_ip", ip=octavia_lb["amphorae"][0]["vrrp_ip"]) == "eth1"

    driver.call("delete_listener", listener_id=listener_id)
    assert amphora.client.get_listeners() == []
    with pytest.raises(requests.ConnectionError):
        answering_members(url, 1)
