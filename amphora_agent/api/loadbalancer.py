"""Routes: a load balancer's haproxy config, its start / stop / reload, and its deletion."""

from __future__ import annotations

from flask import Response, jsonify

from amphora_agent.certificates import md5_hex
from amphora_agent.errors import APIError
from amphora_agent.haproxy import HaproxyError
from amphora_agent.ip_advertisement import advertise
from amphora_agent.names import is_uuid
from amphora_agent.services import AgentServices
from amphora_agent.validation import read_body

ACTIONS = ("start", "stop", "reload")


def lb_not_found(lb_id: str) -> APIError:
    return APIError(404, "Loadbalancer Not Found", f"No loadbalancer with UUID: {lb_id}")


def require_existing_lb(agent: AgentServices, lb_id: str) -> None:
    if not agent.haproxy.exists(lb_id):  # also False for anything not UUID-shaped
        raise lb_not_found(lb_id)


def upload_haproxy_config(agent: AgentServices, amphora_id: str, lb_id: str) -> Response:
    if not (is_uuid(amphora_id) and is_uuid(lb_id)):
        raise APIError(400, "Invalid request", "amphora and load balancer ids must be UUIDs")
    body = read_body(agent.config.max_request_body_bytes)
    with agent.lb_locks.hold(lb_id):
        try:
            agent.haproxy.install_config(lb_id, body)
        except HaproxyError as exc:
            raise APIError(400, "Invalid request", exc.output) from exc
    response = jsonify(message="OK")
    response.status_code = 202
    response.headers["ETag"] = md5_hex(body)
    return response


def get_haproxy_config(agent: AgentServices, lb_id: str) -> Response:
    require_existing_lb(agent, lb_id)
    try:
        data = agent.haproxy.config_path(lb_id).read_bytes()
    except FileNotFoundError as exc:  # deleted by a concurrent request
        raise lb_not_found(lb_id) from exc
    response = Response(data, status=200, mimetype="text/plain")
    response.headers["ETag"] = md5_hex(data)
    return response


def start_stop_reload(agent: AgentServices, lb_id: str, action: str) -> Response:
    action = action.lower()
    if action not in ACTIONS:
        raise APIError(400, "Invalid Request", f"Unknown action: {action}")
    if not is_uuid(lb_id):
        raise lb_not_found(lb_id)
    haproxy = agent.haproxy
    with agent.lb_locks.hold(lb_id):
        # Under the lock: a delete that ran while this request waited must make it a 404, not
        # record the deleted load balancer as wanted running.
        require_existing_lb(agent, lb_id)
        # What the controller wants is recorded first: a reboot restores it even if the agent
        # dies during the action (restore.py).
        agent.desired.set_load_balancer(lb_id, running=action != "stop")
        # haproxy cannot reload what does not run: a reload starts it, as Octavia's does.
        if action == "reload" and not haproxy.is_running(lb_id):
            action = "start"
        try:
            getattr(haproxy, action)(lb_id)
        except HaproxyError as exc:
            # f"{action}ing" is Octavia's wording, "stoping" included.
            raise APIError(500, f"Error {action}ing haproxy", exc.output) from exc
    # As Octavia's agent: tell the neighbours where the VIPs are (keepalived does it in
    # ACTIVE_STANDBY). A failure is logged, never the request's.
    if action in ("start", "reload") and agent.config.loadbalancer_topology != "ACTIVE_STANDBY":
        advertise(agent.config.network_namespace, haproxy.parsed_config(lb_id).bind_addresses)
    if action == "start":
        details = f"Configuration file is valid\nhaproxy daemon for {lb_id} started"
    else:
        details = f"Listener {lb_id} {action}ed"
    response = jsonify(message="OK", details=details)
    response.status_code = 202
    return response


def delete_loadbalancer(agent: AgentServices, lb_id: str) -> Response:
    """Stop haproxy and remove the config, pid file, stats socket and certificates.

    Deleting what is already gone succeeds (the driver retries deletes)."""
    if not is_uuid(lb_id):
        raise lb_not_found(lb_id)
    with agent.lb_locks.hold(lb_id):
        agent.desired.forget_load_balancer(lb_id)
        try:
            agent.haproxy.delete(lb_id)
        except HaproxyError as exc:
            raise APIError(500, "Error stopping haproxy", exc.output) from exc
    return jsonify(message="OK")
