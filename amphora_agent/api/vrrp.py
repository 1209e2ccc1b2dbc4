"""Routes: vrrp (to be written)."""

from flask import Blueprint

blueprint = Blueprint("vrrp", __name__)
