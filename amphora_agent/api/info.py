"""Routes: version discovery, info, details, listeners status (to be completed)."""

from flask import Blueprint, jsonify

from amphora_agent import API_VERSION

blueprint = Blueprint("info", __name__)


@blueprint.get("/")
def version_discovery():
    return jsonify(api_version=API_VERSION)
