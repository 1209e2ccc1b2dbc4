"""Checks on what a request carries: ids and file names in paths, the size of its body, and
whether that is JSON.

Every check here runs before a handler touches the file system, so a hostile path component
(`..`, a slash smuggled in as %2F, a NUL byte) can never become part of a file name.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Octavia names certificate files after a UUID, a SHA-1 or a host name ("WILDCARD.example.com"):
# letters, digits, '_', '-', '.', never a leading dot, always ".pem" at the end.
_CERT_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,250}\.pem")
_CHUNK = 64 * 1024


def is_uuid(value: str) -> bool:
    """True for the 8-4-4-4-12 hex form Octavia uses for every object id."""
    return _UUID.fullmatch(value) is not None


def is_cert_filename(name: str) -> bool:
    """True for a certificate file name that is safe to join to a directory."""
    return _CERT_FILENAME.fullmatch(name) is not None


def read_body(limit: int) -> bytes:
    """The request body, refusing (413) anything larger than limit bytes.

    This is the one limit on bodies (the app sets no MAX_CONTENT_LENGTH): werkzeug 2.2 does not
    limit chunked bodies, and werkzeug 3 refuses a chunked body of exactly the limit. Reads until
    the end of the body whatever the headers claim, so neither a false Content-Length nor a
    chunked upload can make the agent store a truncated or oversized body.
    """
    too_large = RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    try:
        while chunk := request.stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except (OSError, ValueError) as exc:  # werkzeug 2.2: bad chunked encoding, as OSError
        raise BadRequest(f"The request body could not be read: {exc}") from exc
    return b"".join(chunks)


def read_json_body(limit: int) -> Any:
    """The request body as JSON (whatever its Content-Type, as Octavia's agent), or None when it
    is not a JSON document: the caller answers 400. Nesting too deep for the decoder (a
    RecursionError) is not a document either."""
    try:
        return json.loads(read_body(limit))
    except (ValueError, RecursionError):
        return None

