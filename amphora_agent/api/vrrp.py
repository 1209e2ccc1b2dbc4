"""Routes: upload keepalived's config; start, stop and reload keepalived."""

from __future__ import annotations

from flask import Response, jsonify

from amphora_agent.certificates import md5_hex
from amphora_agent.errors import APIError
from amphora_agent.keepalived import KeepalivedError
from amphora_agent.services import AgentServices
from amphora_agent.validation import read_body

ACTIONS = ("start", "stop", "reload")


def upload_vrrp_config(agent: AgentServices) -> Response:
    body = read_body(agent.config.max_request_body_bytes)
    with agent.vrrp_lock:
        try:
            agent.keepalived.install_config(body)
        except KeepalivedError as exc:
            raise APIError(400, "Invalid request", exc.output) from exc
    response = jsonify(message="OK")
    response.headers["ETag"] = md5_hex(body)
    return response


def vrrp_action(agent: AgentServices, action: str) -> Response:
    action = action.lower()
    if action not in ACTIONS:
        raise APIError(400, "Invalid Request", f"Unknown action: {action}")
    with agent.vrrp_lock:
        # Recorded first, as for load balancers: a reboot restores what was asked for.
        agent.desired.set_keepalived(running=action != "stop")
        try:
            # A start of a running keepalived is a reload (Octavia's agent does the same).
            done = getattr(agent.keepalived, action)()
        except KeepalivedError as exc:
            raise APIError(500, f"Failed to {action} keepalived service", exc.output) from exc
    response = jsonify(message="OK", details=f"keepalived {done}ed")
    response.status_code = 202
    return response
