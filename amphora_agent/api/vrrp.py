"""Routes: upload keepalived's config; start, stop and reload keepalived."""

from __future__ import annotations

from flask import Blueprint, jsonify

from amphora_agent import API_VERSION
from amphora_agent.certificates import md5_hex
from amphora_agent.context import ctx
from amphora_agent.desired_state import DesiredState
from amphora_agent.errors import APIError
from amphora_agent.keepalived import KeepalivedError, KeepalivedSupervisor
from amphora_agent.validation import read_body

blueprint = Blueprint("vrrp", __name__, url_prefix=f"/{API_VERSION}")
ACTIONS = ("start", "stop", "reload")
LOCK = "vrrp"


def _keepalived() -> KeepalivedSupervisor:
    return ctx().services["keepalived"]


def _desired() -> DesiredState:
    return ctx().services["desired_state"]


@blueprint.put("/vrrp/upload")
def upload_vrrp_config():
    context = ctx()
    body = read_body(context.config.max_request_body_bytes)
    with context.lock(LOCK):
        try:
            _keepalived().install_config(body)
        except KeepalivedError as exc:
            raise APIError(400, "Invalid request", exc.output) from exc
    response = jsonify(message="OK")
    response.headers["ETag"] = md5_hex(body)
    return response


@blueprint.put("/vrrp/<action>")
def vrrp_action(action: str):
    action = action.lower()
    if action not in ACTIONS:
        raise APIError(400, "Invalid Request", f"Unknown action: {action}")
    with ctx().lock(LOCK):
        # Recorded first, as for load balancers: a reboot restores what was asked for.
        _desired().set_keepalived(running=action != "stop")
        try:
            # A start of a running keepalived is a reload (Octavia's agent does the same).
            done = getattr(_keepalived(), action)()
        except KeepalivedError as exc:
            raise APIError(500, f"Failed to {action} keepalived service", exc.output) from exc
    response = jsonify(message="OK", details=f"keepalived {done}ed")
    response.status_code = 202
    return response
