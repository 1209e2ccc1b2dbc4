"""Names that reach the file system from a request: object ids and certificate file names.

Every check here runs before a handler touches the file system, so a hostile path component
(`..`, a slash smuggled in as %2F, a NUL byte) can never become part of a file name. This module
imports nothing heavy: keepalived's check script (vrrp_check) runs it every few seconds, and a
check that takes longer than its timeout on a loaded machine gives the VIP up.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Octavia names certificate files after a UUID, a SHA-1 or a host name ("WILDCARD.example.com"):
# letters, digits, '_', '-', '.', never a leading dot, always ".pem" at the end.
_CERT_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}\.pem")


def is_uuid(value: str) -> bool:
    """True for the 8-4-4-4-12 hex form Octavia uses for every object id."""
    return _UUID.fullmatch(value) is not None


def is_cert_filename(name: str) -> bool:
    """True for a certificate file name that is safe to join to a directory."""
    return _CERT_FILENAME.fullmatch(name) is not None
