"""A lab's PKI: one CA, a server certificate per amphora (CN = amphora id), a driver certificate.

Everything is generated at run time into a directory the caller owns; nothing secret is
committed. Files follow Octavia's conventions: the agent's `server.pem` holds key + certificate,
`client.pem` holds the driver's key + certificate, `ca.pem` is the CA certificate both sides trust.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    """A key and certificate, as PEM bytes."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def bundle(self) -> bytes:
        """Key then certificate, the layout of Octavia's server.pem and client.pem."""
        return self.key_pem + self.cert_pem


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "amphora-harness"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_key(kind: str = "ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, common_name: str = "amphora-harness lab CA") -> None:
        self._key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        client: bool = False,
        dns_names: tuple[str, ...] = (),
        key_kind: str = "ec",
    ) -> Issued:
        """Issue a certificate for a server (CN = amphora id, or a TLS listener's host name)
        or, with client=True, for the driver."""
        key = new_key(key_kind)
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))

    def crl_pem(self, revoked_serials: tuple[int, ...] = ()) -> bytes:
        """A certificate revocation list signed by this CA (PEM), revoking these serials."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + VALIDITY)
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def issue_amphora(self, amphora_id: str) -> Issued:
        """An agent's server certificate as Octavia's certificate generator makes it: the
        amphora id as CN and as DNS name. Octavia's driver checks the id as the host name, and
        urllib3 2 matches host names against the DNS names only."""
        return self.issue(amphora_id, dns_names=(amphora_id,))


@dataclass(frozen=True)
class AmphoraCredentials:
    """Paths of the files one amphora's agent needs."""

    ca: Path
    server_pem: Path


@dataclass(frozen=True)
class DriverCredentials:
    """Paths of the files the driver (harness client) needs."""

    ca: Path
    client_pem: Path


class LabPKI:
    """A CA plus the files issued from it, kept under one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority()
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca.cert_pem)
        client = self.ca.issue("amphora-harness driver", client=True)
        client_path = directory / "client.pem"
        _write_secret(client_path, client.bundle)
        self.driver = DriverCredentials(ca=self.ca_path, client_pem=client_path)

    def amphora(self, amphora_id: str) -> AmphoraCredentials:
        """Issue (or re-issue) the server certificate of one amphora."""
        issued = self.ca.issue_amphora(amphora_id)
        path = self.directory / amphora_id / "server.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_secret(path, issued.bundle)
        return AmphoraCredentials(ca=self.ca_path, server_pem=path)


def _write_secret(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)
