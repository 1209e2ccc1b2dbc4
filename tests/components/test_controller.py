"""The controller's flows against a real agent process and real haproxy on loopback.

The agent runs without a data-plane namespace (tests/conftest.py: agent_factory), so the VIP is
127.0.0.1 and is "plugged" already; plugging itself is covered where namespaces exist.
"""

from __future__ import annotations

import socket
import ssl
import uuid

import pytest
import requests

from amphora_agent.vip_firewall import parse_rules
from harness.amphora_api.client import AmphoraAPIError
from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.controller import (
    ControllerError,
    LoadBalancerController,
    md5_hex,
    vip_firewall_rules,
)
from harness.model.loadbalancer import (
    Certificate,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    ModelError,
    Pool,
)
from tests.support.local_agent import free_loopback_port

LOOPBACK = "127.0.0.1"


def http_listener(backend_port: int, protocol: ListenerProtocol = ListenerProtocol.HTTP,
                  **options) -> Listener:
    pool = Pool(members=[Member(address=LOOPBACK, port=backend_port)])
    return Listener(protocol=protocol, port=free_loopback_port(), pools=[pool],
                    default_pool_id=pool.id, **options)


def get(port: int) -> requests.Response:
    return requests.get(f"http://{LOOPBACK}:{port}/", timeout=5)


def refused(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def single(agent_factory, http_backend):
    agent = agent_factory()
    lb = LoadBalancer(vip_address=LOOPBACK, listeners=[http_listener(http_backend.port)])
    controller = LoadBalancerController(lb, [agent.client], paths=agent.amphora_paths())
    return agent, lb, controller


def test_create_serves_and_names_the_amphora(single, http_backend):
    agent, lb, controller = single
    controller.create()
    response = get(lb.listeners[0].port)
    assert response.status_code == 200
    assert response.text == f"backend {http_backend.port}\n"
    assert response.headers["X-Amphora-Id"] == agent.amphora_id
    listeners = agent.client.get_listeners()
    assert {(item["uuid"], item["status"], item["type"]) for item in listeners} == {
        (lb.listeners[0].id, "ACTIVE", "HTTP")
    }
    stored = agent.client.get_config(lb.id)
    assert stored.etag == md5_hex(stored.body.encode())
    assert f"frontend {lb.listeners[0].id}" in stored.body


def test_update_adds_a_listener_and_keeps_the_first(single, http_backend):
    _agent, lb, controller = single
    controller.create()
    lb.listeners.append(http_listener(http_backend.port, protocol=ListenerProtocol.TCP))
    assert refused(lb.listeners[1].port)
    controller.update()
    for listener in lb.listeners:
        assert get(listener.port).text == f"backend {http_backend.port}\n"


def test_a_model_error_stops_the_flow_before_anything_is_sent(single):
    agent, lb, controller = single
    controller.create()
    before = agent.client.get_config(lb.id)
    lb.listeners[0].pools[0].members[0].address = "127.0.0.1\n    stats socket /tmp/x level admin"
    with pytest.raises(ModelError):
        controller.update()
    assert agent.client.get_config(lb.id) == before


def test_delete_closes_the_port_and_forgets_the_load_balancer(single):
    agent, lb, controller = single
    controller.create()
    controller.delete()
    assert refused(lb.listeners[0].port)
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.get_config(lb.id)
    assert caught.value.status == 404
    assert agent.client.get_listeners() == []


def test_topology_decides_how_many_amphorae(agent_factory):
    lb = LoadBalancer(vip_address=LOOPBACK, topology="ACTIVE_STANDBY")
    with pytest.raises(ControllerError, match="2 amphorae"):
        LoadBalancerController(lb, [object()])


# --- TERMINATED_HTTPS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_ca() -> CertificateAuthority:
    return CertificateAuthority("tenant CA")


def site_certificate(ca: CertificateAuthority, host: str) -> Certificate:
    return Certificate(name=host.split(".")[0], pem=ca.issue(host, dns_names=(host,)).bundle)


def served_common_name(port: int, server_name: str, ca: CertificateAuthority) -> str:
    """The CN of the certificate served for server_name (whether or not it matches it)."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.check_hostname = False
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        subject = dict(item for rdn in tls.getpeercert()["subject"] for item in rdn)
    return subject["commonName"]


def test_tls_certificates_are_uploaded_served_by_sni_rotated_and_deleted(
    agent_factory, http_backend, site_ca
):
    agent = agent_factory()
    default = site_certificate(site_ca, "default.example.com")
    site_a = site_certificate(site_ca, "a.example.com")
    listener = http_listener(http_backend.port, protocol=ListenerProtocol.TERMINATED_HTTPS,
                             certificate=default, sni_certificates=[site_a])
    lb = LoadBalancer(vip_address=LOOPBACK, listeners=[listener])
    controller = LoadBalancerController(lb, [agent.client], paths=agent.amphora_paths())
    controller.create()

    for cert in (default, site_a):
        assert agent.client.get_cert_md5(lb.id, f"{cert.id}.pem") == md5_hex(cert.pem)
    assert served_common_name(listener.port, "a.example.com", site_ca) == "a.example.com"
    assert served_common_name(listener.port, "other.example.com", site_ca) == (
        "default.example.com")

    renewed = site_certificate(site_ca, "a.example.com")
    controller.rotate_certificate(site_a, renewed)
    assert agent.client.get_cert_md5(lb.id, f"{renewed.id}.pem") == md5_hex(renewed.pem)
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.get_cert_md5(lb.id, f"{site_a.id}.pem")
    assert caught.value.status == 404
    context = ssl.create_default_context(cadata=site_ca.cert_pem.decode())
    with socket.create_connection((LOOPBACK, listener.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="a.example.com") as tls:
        served = tls.getpeercert(binary_form=True)
    assert ssl.DER_cert_to_PEM_cert(served).encode() in renewed.pem

    controller.delete()
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.get_cert_md5(lb.id, f"{renewed.id}.pem")
    assert caught.value.status == 404


def test_rotating_a_certificate_nobody_uses_is_an_error(single, site_ca):
    _agent, _lb, controller = single
    with pytest.raises(ControllerError, match="uses certificate"):
        controller.rotate_certificate(site_certificate(site_ca, "x.example.com"),
                                      site_certificate(site_ca, "y.example.com"))


def test_two_load_balancers_on_one_amphora_are_independent(agent_factory, http_backend):
    agent = agent_factory()
    controllers = []
    for _ in range(2):
        lb = LoadBalancer(vip_address=LOOPBACK, listeners=[http_listener(http_backend.port)])
        controllers.append(LoadBalancerController(lb, [agent.client], paths=agent.amphora_paths()))
        controllers[-1].create()
    first, second = controllers
    first.delete()
    assert refused(first.lb.listeners[0].port)
    assert get(second.lb.listeners[0].port).status_code == 200
    assert [item["uuid"] for item in agent.client.get_listeners()] == [
        second.lb.listeners[0].id]
    assert str(uuid.UUID(second.lb.id)) == second.lb.id


def test_sriov_firewall_rules_open_each_listener_to_its_cidrs_and_vrrp_to_the_peer():
    web = http_listener(8080, allowed_cidrs=["198.18.0.0/24", "2001:db8::/64"])
    raw = Listener(protocol=ListenerProtocol.TCP, port=9000)
    lb = LoadBalancer(vip_address="198.18.0.10", listeners=[web, raw], sriov_vip=True)
    assert vip_firewall_rules(lb, ["198.18.0.12", "2001:db8::12"]) == [
        {"protocol": "TCP", "cidr": "198.18.0.0/24", "port": web.port},
        {"protocol": "TCP", "cidr": "2001:db8::/64", "port": web.port},
        {"protocol": "TCP", "cidr": None, "port": 9000},
        {"protocol": "vrrp", "cidr": "198.18.0.12/32", "port": 112},
        {"protocol": "vrrp", "cidr": "2001:db8::12/128", "port": 112},
    ]
    # What the rules document must be, the agent's own parser says.
    assert len(parse_rules(vip_firewall_rules(lb, ["198.18.0.12"]))) == 4
