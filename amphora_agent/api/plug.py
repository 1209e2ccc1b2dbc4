"""Routes: plug (to be written)."""

from flask import Blueprint

blueprint = Blueprint("plug", __name__)
