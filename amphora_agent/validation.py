"""Checks on what a request's body carries: its size, and whether it is JSON (names in paths are
checked by names.py)."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

_CHUNK = 64 * 1024


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

