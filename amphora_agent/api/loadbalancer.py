"""Routes: loadbalancer (to be written)."""

from flask import Blueprint

blueprint = Blueprint("loadbalancer", __name__)
