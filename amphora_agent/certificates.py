"""PEM files the driver uploads: checked before they are stored, summed with md5 after.

Two kinds of upload:
- the agent's own server certificate (PUT /1.0/certificate): a private key, the certificate
  that goes with it, and optionally its chain;
- a load balancer's files (PUT .../certificates/NAME.pem). Octavia's driver uploads four kinds
  under that one route: key + certificate + chain for a TLS listener or a pool's client
  certificate, CA certificates (no key), CRLs, and haproxy crt-list files (lines naming the
  other files). Each is accepted when it is what it claims to be.

The error messages are the Amphora API's.

cryptography is imported on the first upload that needs it, not with the agent: its import (its
Rust bindings and x509 modules) is 15-25 % of the agent's start, which every amphora boot waits
for, while the first upload pays it once. It is not imported in the background after the
agent listens either: that would hold the interpreter while the first requests, the
readiness probe's among them, are answered.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

NO_CERTIFICATE = "No certificate found"
NO_KEY = "No RSA key found"  # the API's wording; EC keys are accepted too
KEY_MISMATCH = "Certificate and key do not match"

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL
)


class CertificateError(ValueError):
    """An upload is not an acceptable PEM file; str() is the API's message."""


def md5_hex(data: bytes) -> str:
    """The checksum the API reports as ETag and md5sum (a change detector, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(match.group(1).decode(), match.group(0)) for match in _PEM_BLOCK.finditer(data)]


def _load_certificates(blocks: list[tuple[str, bytes]]) -> list[x509.Certificate]:
    from cryptography import x509

    certificates = []
    for kind, block in blocks:
        if kind in ("CERTIFICATE", "TRUSTED CERTIFICATE"):
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise CertificateError(NO_CERTIFICATE) from exc
    return certificates


def _load_keys(blocks: list[tuple[str, bytes]]) -> list:
    from cryptography.hazmat.primitives import serialization

    keys = []
    for kind, block in blocks:
        if kind.endswith("PRIVATE KEY"):
            try:
                keys.append(serialization.load_pem_private_key(block, password=None))
            except (ValueError, TypeError, NotImplementedError) as exc:
                # Malformed, encrypted (haproxy could not read it either) or unsupported.
                raise CertificateError(NO_KEY) from exc
    return keys


def _public_der(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_key_pair(certificates: list[x509.Certificate], keys: list) -> None:
    """One key, matching the first certificate (the leaf; the rest is its chain)."""
    if not certificates:
        raise CertificateError(NO_CERTIFICATE)
    if len(keys) != 1:
        raise CertificateError(NO_KEY)
    if _public_der(keys[0].public_key()) != _public_der(certificates[0].public_key()):
        raise CertificateError(KEY_MISMATCH)


def validate_key_and_certificate(data: bytes) -> x509.Certificate:
    """Check a key + certificate (+ chain) bundle; returns the leaf certificate."""
    blocks = _blocks(data)
    certificates = _load_certificates(blocks)
    _check_key_pair(certificates, _load_keys(blocks))
    return certificates[0]


def _is_crt_list(data: bytes) -> bool:
    """A haproxy crt-list as Octavia writes it: one absolute path to a .pem file per line
    (optionally followed by bind options and SNI filters)."""
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    except UnicodeDecodeError:
        return False
    entries = [line for line in lines if line and not line.startswith("#")]
    return bool(entries) and all(
        entry.split()[0].startswith("/") and entry.split()[0].endswith(".pem")
        for entry in entries
    )


def validate_lb_file(data: bytes) -> None:
    """Check a file uploaded under a load balancer's certificates/ (see the module doc)."""
    blocks = _blocks(data)
    if not blocks:
        if _is_crt_list(data):
            return
        raise CertificateError(NO_CERTIFICATE)
    certificates = _load_certificates(blocks)
    keys = _load_keys(blocks)
    crls = [block for kind, block in blocks if kind == "X509 CRL"]
    if crls:
        from cryptography import x509
    for crl in crls:
        try:
            x509.load_pem_x509_crl(crl)
        except ValueError as exc:
            raise CertificateError(NO_CERTIFICATE) from exc
    if keys:
        _check_key_pair(certificates, keys)
    elif not certificates and not crls:
        raise CertificateError(NO_CERTIFICATE)
