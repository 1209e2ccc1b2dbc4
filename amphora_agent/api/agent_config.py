"""Routes: agent_config (to be written)."""

from flask import Blueprint

blueprint = Blueprint("agent_config", __name__)
