"""Route: PUT /1.0/config, a new agent configuration file."""

from __future__ import annotations

from flask import Response, jsonify

from amphora_agent.agent_config_update import update_agent_config
from amphora_agent.config import ConfigError
from amphora_agent.errors import APIError
from amphora_agent.services import AgentServices
from amphora_agent.validation import read_body

# Not max_request_body_bytes: however small that was set, the file that repairs it must fit.
# (An agent config file is a few kB.)
CONFIG_FILE_MAX_BYTES = 64 * 1024


def upload_config(agent: AgentServices) -> Response:
    body = read_body(CONFIG_FILE_MAX_BYTES)
    with agent.config_lock:
        try:
            agent.config = update_agent_config(agent.config, body)
        except ConfigError as exc:
            raise APIError(500, "Unable to update amphora-agent configuration.", str(exc)) from exc
        agent.heartbeat.reconfigure(agent.config)
    response = jsonify(message="OK")
    response.status_code = 202
    return response
