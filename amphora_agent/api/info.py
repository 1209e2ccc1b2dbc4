"""Routes: version discovery, info, details, listeners status."""

from __future__ import annotations

from flask import Blueprint, jsonify

from amphora_agent import API_VERSION, details
from amphora_agent.context import ctx
from amphora_agent.haproxy import HaproxySupervisor

blueprint = Blueprint("info", __name__)
PREFIX = f"/{API_VERSION}"


def _haproxy() -> HaproxySupervisor:
    return ctx().services["haproxy"]


@blueprint.get("/")
def version_discovery():
    return jsonify(api_version=API_VERSION)


# The original specification wrote /info without the version prefix; both answer.
@blueprint.get("/info")
@blueprint.get(f"{PREFIX}/info")
def get_info():
    return jsonify(details.info(ctx().config))


@blueprint.get(f"{PREFIX}/details")
def get_details():
    context = ctx()
    return jsonify(details.details(context.config, _haproxy(), context.services["keepalived"]))


@blueprint.get(f"{PREFIX}/listeners")
def get_listeners():
    """Every listener of every uploaded config, with its load balancer's haproxy state."""
    haproxy = _haproxy()
    statuses = []
    for lb_id in haproxy.lb_ids():
        status = haproxy.status(lb_id)
        for listener in haproxy.parsed_config(lb_id).listeners.values():
            statuses.append(
                {"status": status, "uuid": listener.listener_id, "type": listener.type}
            )
    return jsonify(statuses)
