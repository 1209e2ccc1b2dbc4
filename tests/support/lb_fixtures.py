"""What the load-balancer fixture files (fixtures/lbs, read by harness.model.yaml_loader) are
loaded with in the unit tests: an address for each name they use, and a certificate for each
certificate name."""

from __future__ import annotations

from harness.amphora_api.pki import CertificateAuthority

ADDRESSES = {"vip": "198.18.1.10", "m1": "198.18.2.11", "m2": "198.18.2.12", "m3": "198.18.2.13"}
CERTIFICATE_NAMES = ("default", "site-a", "site-b")


def fixture_certificates() -> dict[str, bytes]:
    """A PEM bundle (certificate and key) for each certificate name, from a fresh CA."""
    ca = CertificateAuthority()
    return {name: ca.issue(f"{name}.example.com", dns_names=(f"{name}.example.com",)).bundle
            for name in CERTIFICATE_NAMES}
