"""Smoke: one amphora, one HTTP listener, two members, driven like a controller drives them.

Traffic from the host through the VIP must reach both members, the agent's port must be out of
reach from the VIP network, and haproxy must run inside the data-plane namespace.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
import requests
import tenacity

from harness.drivers.factory import DriverFactory
from harness.lab.constants import AGENT_PORT, DATA_PLANE_NAMESPACE
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.lab.providers.base import Node
from harness.model import loadbalancer as model
from harness.model.loadbalancer import VipPort

LISTENER_PORT = 80
# haproxy needs about two files per connection; some engines cap a container's open files (a
# dockerd with LimitNOFILE=20000, say), which Octavia's default of 50,000 would exceed.
CONNECTION_LIMIT = 2000
REQUESTS = 20


@pytest.fixture(scope="module")
def vip(lab: Lab) -> IPv4Address:
    return lab.allocate_vip()


@pytest.fixture(scope="module")
def vip_port(lab: Lab, amphora: LabAmphora) -> VipPort:
    return lab.attach_vip_port(amphora)


@pytest.fixture(scope="module")
def load_balancer(lab: Lab, amphora: LabAmphora, members: list[LabMember], vip: IPv4Address,
                  vip_port: VipPort, lb_driver_factory: DriverFactory) -> model.LoadBalancer:
    """VIP and member ports plugged, haproxy.cfg uploaded and started: what a controller (the
    session's driver) does."""
    pool = model.Pool(members=[
        model.Member(address=str(m.address), port=m.port("http")) for m in members
    ])
    listener = model.Listener(
        protocol=model.ListenerProtocol.HTTP, port=LISTENER_PORT, connection_limit=CONNECTION_LIMIT,
        pools=[pool], default_pool_id=pool.id,
        insert_headers=[model.InsertHeader.X_FORWARDED_FOR],
    )
    lb = model.LoadBalancer(vip_address=str(vip), listeners=[listener])
    lb_driver_factory(lb, [amphora.client]).create([vip_port], [lab.attach_member_port(amphora)])
    return lb


@pytest.fixture(scope="module")
def vip_url(load_balancer: model.LoadBalancer) -> str:
    return f"http://{load_balancer.vip_address}:{LISTENER_PORT}/"


def _first_answer(http: requests.Session, url: str) -> requests.Response:
    """The first answer through the VIP (haproxy may take a moment to bind after start)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(requests.RequestException),
        stop=tenacity.stop_after_attempt(20) | tenacity.stop_after_delay(15),
        wait=tenacity.wait_fixed(0.5), reraise=True,
    )(lambda: http.get(url, timeout=3))


def test_traffic_through_the_vip_reaches_both_members(
    http: requests.Session, lab: Lab, amphora: LabAmphora, members: list[LabMember], vip_url: str,
) -> None:
    _first_answer(http, vip_url).raise_for_status()
    answers = []
    for _ in range(REQUESTS):
        response = http.get(vip_url, headers={"Connection": "close"}, timeout=5)
        assert response.status_code == 200
        answers.append(response.json())

    assert {a["member"] for a in answers} == {m.id for m in members}
    # Members see haproxy's address on the member network (so the amphora carried every
    # request, whatever the driver rendered), and the client in X-Forwarded-For.
    member_port_ips = {str(p.ip_address) for p in amphora.ports
                       if p.network.spec.role == "member"}
    assert {a["client"] for a in answers} == member_port_ips
    assert {a["forwarded_for"] for a in answers} == {str(lab.traffic_source())}


def test_member_status_knob_passes_through(http: requests.Session, vip_url: str) -> None:
    _first_answer(http, vip_url)
    assert http.get(vip_url, params={"status": "503"}, timeout=5).status_code == 503


def test_agent_port_is_out_of_reach_from_the_vip_network(
    lab: Lab, amphora: LabAmphora, vip_port: VipPort, vip_client: Node,
    load_balancer: model.LoadBalancer, http: requests.Session, vip_url: str,
) -> None:
    _first_answer(http, vip_url)
    # The probe works and the path exists: the listener answers from the client's side.
    assert lab.can_connect(vip_client, load_balancer.vip_address, LISTENER_PORT)
    for address in (load_balancer.vip_address, vip_port.vrrp_ip, amphora.mgmt_address):
        assert not lab.can_connect(vip_client, address, AGENT_PORT), address


def test_haproxy_runs_in_the_data_plane_namespace(
    amphora_host, amphora: LabAmphora, load_balancer: model.LoadBalancer,
    http: requests.Session, vip_url: str,
) -> None:
    _first_answer(http, vip_url)
    # The masters (root): workers run as another user and are not dumpable, so their
    # /proc/<pid>/ns is closed to us; they are forks of a master and share its namespace.
    masters = [p for p in amphora_host.process.filter(comm="haproxy") if p.user == "root"]
    assert masters, "no haproxy master process in the amphora"
    default_ns = amphora_host.check_output("readlink /proc/1/ns/net")
    for process in masters:
        assert amphora_host.check_output(f"readlink /proc/{process.pid}/ns/net") != default_ns

    inside = amphora_host.check_output(f"ip netns exec {DATA_PLANE_NAMESPACE} ss -ltnH")
    outside = amphora_host.check_output("ss -ltnH")
    listener = f"{load_balancer.vip_address}:{LISTENER_PORT}"
    assert listener in inside
    assert listener not in outside
    # ... and the agent listens in the default namespace, on the management address only.
    assert f"{amphora.mgmt_address}:{AGENT_PORT}" in outside
    assert f":{AGENT_PORT}" not in inside
