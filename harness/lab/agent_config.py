"""The agent's INI file as a controller writes it (Octavia's section and option names)."""

from __future__ import annotations

import configparser
import io
from dataclasses import dataclass, field

from harness.lab.constants import DATA_PLANE_NAMESPACE


@dataclass
class AgentSettings:
    amphora_id: str
    ca_path: str
    server_pem_path: str
    bind_host: str = "0.0.0.0"
    bind_port: int = 9443
    base_path: str = "/var/lib/octavia"
    base_cert_dir: str = "/var/lib/octavia/certs"
    network_namespace: str = DATA_PLANE_NAMESPACE
    topology: str = "SINGLE"
    controllers: list[str] = field(default_factory=list)  # "host:port"
    heartbeat_interval: float = 10.0
    heartbeat_key: str = "insecure"
    haproxy_cmd: str = "/usr/sbin/haproxy"
    extra: dict[str, dict[str, str]] = field(default_factory=dict)


def render_agent_config(settings: AgentSettings) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser["DEFAULT"] = {}
    parser["amphora_agent"] = {
        "agent_server_ca": settings.ca_path,
        "agent_server_cert": settings.server_pem_path,
        "agent_request_read_timeout": "180",
        "amphora_id": settings.amphora_id,
        "network_namespace": settings.network_namespace,
    }
    parser["haproxy_amphora"] = {
        "base_path": settings.base_path,
        "base_cert_dir": settings.base_cert_dir,
        "bind_host": settings.bind_host,
        "bind_port": str(settings.bind_port),
        "haproxy_cmd": settings.haproxy_cmd,
    }
    parser["health_manager"] = {
        "controller_ip_port_list": ", ".join(settings.controllers),
        # Octavia's option is an integer: 10.0 would stop its health sender ("invalid literal
        # for int()"); a whole number of seconds is written as one.
        "heartbeat_interval": f"{settings.heartbeat_interval:g}",
        "heartbeat_key": settings.heartbeat_key,
    }
    parser["controller_worker"] = {"loadbalancer_topology": settings.topology}
    for section, options in settings.extra.items():
        if not parser.has_section(section):
            parser[section] = {}
        parser[section].update(options)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()
