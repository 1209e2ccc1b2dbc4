"""Routes: a load balancer's certificate files, and rotation of the agent's own certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from flask import Response, jsonify

from amphora_agent.certificates import (
    NO_CERTIFICATE,
    CertificateError,
    md5_hex,
    validate_key_and_certificate,
    validate_lb_file,
)
from amphora_agent.errors import APIError
from amphora_agent.fsutil import atomic_write
from amphora_agent.names import is_cert_filename, is_uuid
from amphora_agent.server import make_tls_context
from amphora_agent.services import AgentServices
from amphora_agent.validation import read_body


def _cert_path(agent: AgentServices, lb_id: str, filename: str, *, uploading: bool) -> Path:
    """The file for (lb_id, filename), refusing any name that is not safe to join."""
    if not is_cert_filename(filename):
        raise APIError(400, "Filename has wrong format")
    if not is_uuid(lb_id):
        if uploading:
            raise APIError(400, "Invalid request", "load balancer ids must be UUIDs")
        raise APIError(404, "Loadbalancer Not Found", f"No loadbalancer with UUID: {lb_id}")
    return agent.config.base_cert_dir / lb_id / filename


def upload_certificate(agent: AgentServices, lb_id: str, filename: str) -> Response:
    path = _cert_path(agent, lb_id, filename, uploading=True)
    body = read_body(agent.config.max_request_body_bytes)
    try:
        validate_lb_file(body)
    except CertificateError as exc:
        raise APIError(400, str(exc)) from exc
    with agent.lb_locks.hold(lb_id):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(path, body, mode=0o600, durable=False)
    response = jsonify(message="OK")
    response.headers["ETag"] = md5_hex(body)
    return response


def get_certificate_md5(agent: AgentServices, lb_id: str, filename: str) -> Response:
    """The md5 of a stored file; never the file itself (it holds a private key)."""
    path = _cert_path(agent, lb_id, filename, uploading=False)
    try:
        md5sum = md5_hex(path.read_bytes())
    except FileNotFoundError as exc:
        raise APIError(404, "Certificate Not Found",
                       f"No certificate with filename: {filename}") from exc
    response = jsonify(md5sum=md5sum)
    response.headers["ETag"] = md5sum
    return response


def delete_certificate(agent: AgentServices, lb_id: str, filename: str) -> Response:
    path = _cert_path(agent, lb_id, filename, uploading=False)
    with agent.lb_locks.hold(lb_id):
        path.unlink(missing_ok=True)
    return jsonify(message="OK")


def rotate_server_certificate(agent: AgentServices) -> Response:
    """Store a new server certificate and serve it to every connection accepted from now on.

    The context is swapped before the response goes out: the connection carrying this request
    finished its handshake long ago and keeps its session, while a client that reconnects right
    after reading the answer must already see the new certificate.
    """
    config = agent.config
    body = read_body(config.max_request_body_bytes)
    try:
        validate_key_and_certificate(body)
    except CertificateError as exc:
        raise APIError(400, str(exc)) from exc
    loaded: list[ssl.SSLContext] = []

    def load_as_server_context(candidate: Path) -> None:
        # The very file about to become agent_server_cert must load, or it is not installed.
        try:
            loaded.append(make_tls_context(candidate, config.agent_server_ca))
        except ssl.SSLError as exc:
            raise CertificateError(NO_CERTIFICATE) from exc

    with agent.server_cert_lock:
        try:
            atomic_write(config.agent_server_cert, body, mode=0o600,
                         validate=load_as_server_context)
        except CertificateError as exc:
            raise APIError(400, str(exc)) from exc
        agent.server_tls.replace(loaded[0])
    response = jsonify(message="OK")
    response.status_code = 202
    # This connection still speaks with the old certificate: the client's next call must
    # handshake again.
    response.headers["Connection"] = "close"
    return response
