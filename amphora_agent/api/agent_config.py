"""Route: PUT /1.0/config, a new agent configuration file."""

from __future__ import annotations

from flask import Blueprint, jsonify

from amphora_agent import API_VERSION
from amphora_agent.agent_config_update import update_agent_config
from amphora_agent.config import ConfigError
from amphora_agent.context import ctx
from amphora_agent.errors import APIError
from amphora_agent.validation import read_body

blueprint = Blueprint("agent_config", __name__, url_prefix=f"/{API_VERSION}")


@blueprint.put("/config")
def upload_config():
    context = ctx()
    body = read_body(context.config.max_request_body_bytes)
    with context.lock("agent_config"):
        try:
            update_agent_config(context, body)
        except ConfigError as exc:
            raise APIError(500, "Unable to update amphora-agent configuration.", str(exc)) from exc
    response = jsonify(message="OK")
    response.status_code = 202
    return response
