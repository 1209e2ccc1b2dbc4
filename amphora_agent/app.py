"""The Flask application: routes of the Amphora API 1.0, JSON errors."""

from __future__ import annotations

from flask import Flask

from amphora_agent.api import agent_config, certificate, info, loadbalancer, plug, vrrp
from amphora_agent.context import EXTENSION_KEY, AgentContext
from amphora_agent.errors import register_error_handlers


def create_app(context: AgentContext) -> Flask:
    app = Flask("amphora_agent")
    app.config["MAX_CONTENT_LENGTH"] = context.config.max_request_body_bytes
    app.json.sort_keys = False
    app.extensions[EXTENSION_KEY] = context
    # Octavia's routes have no trailing slashes and must match exactly.
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    for module in (info, loadbalancer, certificate, plug, vrrp, agent_config):
        app.register_blueprint(module.blueprint)
    return app
