"""Routes: certificate (to be written)."""

from flask import Blueprint

blueprint = Blueprint("certificate", __name__)
