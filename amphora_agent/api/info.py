"""Routes: version discovery, info, details, listeners status."""

from __future__ import annotations

from flask import Response, jsonify

from amphora_agent import API_VERSION, details
from amphora_agent.services import AgentServices


def version_discovery(_agent: AgentServices) -> Response:
    return jsonify(api_version=API_VERSION)


def get_info(agent: AgentServices) -> Response:
    return jsonify(details.info(agent.config))


def get_details(agent: AgentServices) -> Response:
    return jsonify(details.details(agent.config, agent.haproxy, agent.keepalived))


def get_listeners(agent: AgentServices) -> Response:
    """Every listener of every uploaded config, with its load balancer's haproxy state."""
    haproxy = agent.haproxy
    statuses = []
    for lb_id in haproxy.lb_ids():
        status = haproxy.status(lb_id)
        for listener in haproxy.parsed_config(lb_id).listeners.values():
            statuses.append(
                {"status": status, "uuid": listener.listener_id, "type": listener.type}
            )
    return jsonify(statuses)
