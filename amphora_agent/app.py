"""The Flask application: every route of the Amphora API 1.0 and its handler, JSON errors.

Each handler is called with the agent's services (services.py) and the route's path fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response

from amphora_agent import API_VERSION
from amphora_agent.api import agent_config, certificate, info, loadbalancer, plug, vrrp
from amphora_agent.errors import register_error_handlers
from amphora_agent.services import AgentServices


@dataclass(frozen=True)
class Route:
    method: str
    rule: str
    handler: Callable[..., Response]


V = f"/{API_VERSION}"
LB_CERTIFICATE = f"{V}/loadbalancer/<lb_id>/certificates/<filename>"

# A rule with a fixed segment wins over one with a field in its place (werkzeug's ordering):
# PUT .../vrrp/upload is never taken for an action.
ROUTES = (
    Route("GET", "/", info.version_discovery),
    Route("GET", "/info", info.get_info),  # Octavia's agent answers without the version too
    Route("GET", f"{V}/info", info.get_info),
    Route("GET", f"{V}/details", info.get_details),
    Route("GET", f"{V}/listeners", info.get_listeners),
    Route("PUT", f"{V}/loadbalancer/<amphora_id>/<lb_id>/haproxy",
          loadbalancer.upload_haproxy_config),
    Route("GET", f"{V}/loadbalancer/<lb_id>/haproxy", loadbalancer.get_haproxy_config),
    Route("PUT", f"{V}/loadbalancer/<lb_id>/<action>", loadbalancer.start_stop_reload),
    Route("DELETE", f"{V}/listeners/<lb_id>", loadbalancer.delete_loadbalancer),
    Route("PUT", LB_CERTIFICATE, certificate.upload_certificate),
    Route("GET", LB_CERTIFICATE, certificate.get_certificate_md5),
    Route("DELETE", LB_CERTIFICATE, certificate.delete_certificate),
    Route("PUT", f"{V}/certificate", certificate.rotate_server_certificate),
    Route("POST", f"{V}/plug/vip/<vip>", plug.plug_vip),
    Route("POST", f"{V}/plug/network", plug.plug_network),
    Route("GET", f"{V}/interface/<address>", plug.get_interface),
    Route("PUT", f"{V}/interface/<address>/rules", plug.set_interface_rules),
    Route("PUT", f"{V}/vrrp/upload", vrrp.upload_vrrp_config),
    Route("PUT", f"{V}/vrrp/<action>", vrrp.vrrp_action),
    Route("PUT", f"{V}/config", agent_config.upload_config),
)


def create_app(agent: AgentServices) -> Flask:
    app = Flask("amphora_agent")
    app.json.sort_keys = False
    # Octavia's routes have no trailing slashes and must match exactly.
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    for route in ROUTES:
        app.add_url_rule(route.rule, endpoint=f"{route.method} {route.rule}",
                         view_func=functools.partial(route.handler, agent),
                         methods=[route.method])
    return app
