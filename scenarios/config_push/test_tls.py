"""TERMINATED_HTTPS through the VIP: certificates arrive intact (md5), each SNI name gets its
certificate and anything else the default one, a rotation serves the new certificate and
removes the old file, and deleting the load balancer removes its certificates."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests

from harness.amphora_api.client import AmphoraAPIError
from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.controller import md5_hex
from harness.model.loadbalancer import Certificate

HOSTS = {"default": "www.example.com", "site-a": "a.example.com", "site-b": "b.example.com"}


@pytest.fixture(scope="module")
def tenant_ca() -> CertificateAuthority:
    return CertificateAuthority("tenant CA")


def issue(ca: CertificateAuthority, name: str) -> bytes:
    return ca.issue(HOSTS[name], dns_names=(HOSTS[name],)).bundle


def served_certificate(vip: str, server_name: str, ca: CertificateAuthority) -> bytes:
    """The DER certificate the listener presents for server_name (chain checked, name not)."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.check_hostname = False
    with socket.create_connection((vip, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        return tls.getpeercert(binary_form=True)


def der(certificate: Certificate) -> bytes:
    """The leaf certificate of a PEM bundle, as DER."""
    begin = certificate.pem.index(b"-----BEGIN CERTIFICATE-----")
    end = certificate.pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(certificate.pem[begin:end].decode())


def stored_md5(amphora, lb_id: str, certificate: Certificate) -> str | None:
    try:
        return amphora.client.get_cert_md5(lb_id, f"{certificate.id}.pem")
    except AmphoraAPIError as exc:
        assert exc.status == 404
        return None


def test_sni_rotation_and_deletion(load, deploy, amphora, vip, tenant_ca, http):
    lb = load("https-sni", certificates={name: issue(tenant_ca, name) for name in HOSTS})
    controller = deploy(lb)
    https = lb.listener("https")
    default, site_a, site_b = https.certificates

    for cert in (default, site_a, site_b):
        assert stored_md5(amphora, lb.id, cert) == md5_hex(cert.pem)
    assert served_certificate(vip, "a.example.com", tenant_ca) == der(site_a)
    assert served_certificate(vip, "b.example.com", tenant_ca) == der(site_b)
    assert served_certificate(vip, "unknown.example.com", tenant_ca) == der(default)

    answer = http.get(f"https://{vip}/", verify=False, timeout=5).json()
    assert answer["forwarded_proto"] == "https"

    renewed = Certificate(name="site-a", pem=issue(tenant_ca, "site-a"))
    controller.rotate_certificate(site_a, renewed)
    assert served_certificate(vip, "a.example.com", tenant_ca) == der(renewed)
    assert stored_md5(amphora, lb.id, renewed) == md5_hex(renewed.pem)
    assert stored_md5(amphora, lb.id, site_a) is None

    controller.delete()
    for cert in (default, renewed, site_b):
        assert stored_md5(amphora, lb.id, cert) is None
    with pytest.raises(requests.ConnectionError):
        http.get(f"https://{vip}/", verify=False, timeout=5)
