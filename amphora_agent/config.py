"""The agent's configuration file: Octavia's INI sections and option names.

Options Octavia knows but we do not use are accepted and ignored, so a config file written for
Octavia's agent works here unchanged. A few options of our own (marked below) exist so that tests
can run several agents on one host.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """The configuration file is unreadable or has a bad value."""


@dataclass(frozen=True)
class AgentConfig:
    amphora_id: str
    agent_server_ca: Path
    agent_server_cert: Path
    base_path: Path = Path("/var/lib/octavia")
    base_cert_dir: Path = Path("/var/lib/octavia/certs")
    bind_host: str = "0.0.0.0"
    bind_port: int = 9443
    haproxy_cmd: str = "/usr/sbin/haproxy"
    agent_request_read_timeout: float = 180.0
    loadbalancer_topology: str = "SINGLE"
    controller_ip_port_list: tuple[tuple[str, int], ...] = ()
    heartbeat_interval: float = 10.0
    heartbeat_key: str = ""
    # Ours: the data-plane namespace. Empty runs haproxy/keepalived in the agent's own namespace
    # (single-host tests of the config API).
    network_namespace: str = "amphora-haproxy"
    # Ours: request bodies larger than this get 413.
    max_request_body_bytes: int = 16 * 1024 * 1024
    # Ours: the keepalived binary.
    keepalived_cmd: str = "/usr/sbin/keepalived"
    # The file this config was read from; PUT /1.0/config rewrites it.
    source_file: Path | None = field(default=None, compare=False)

    @property
    def vrrp_dir(self) -> Path:
        return self.base_path / "vrrp"


TOPOLOGIES = ("SINGLE", "ACTIVE_STANDBY")
# Above an hour the controller has long failed the amphora over; and a wait as long as 1e10 s
# overflows the C timeout of the heartbeat thread's wait.
HEARTBEAT_INTERVAL_S = (0.1, 3600.0)


def _port(value: str, what: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what}: {port} is not a port (1..65535)")
    return port


def _positive(value: str, what: str) -> float:
    """A duration or size: finite and above zero (NaN, inf and 0 would stall or spin loops)."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{what}: {value!r} is not a positive number")
    return number


def _number(value: str, what: str, bounds: tuple[float, float]) -> float:
    """A number in bounds (NaN and the infinities never are)."""
    low, high = bounds
    try:
        number = float(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r} is not a number") from exc
    if not low <= number <= high:
        raise ConfigError(f"{what}: {value!r} is not in {low:g}..{high:g}")
    return number


def _parse_controllers(value: str) -> tuple[tuple[str, int], ...]:
    controllers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"controller_ip_port_list: {item!r} is not HOST:PORT")
        controllers.append((host.strip("[]"), _port(port, "controller_ip_port_list")))
    return tuple(controllers)


def _topology(value: str) -> str:
    topology = value.upper()
    if topology not in TOPOLOGIES:
        raise ConfigError(f"loadbalancer_topology: {value!r} is not one of {TOPOLOGIES}")
    return topology


def parse_config(text: str, source_file: Path | None = None) -> AgentConfig:
    """Parse INI text into an AgentConfig, raising ConfigError with a readable reason."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ConfigError(str(exc)) from exc

    def get(section: str, option: str, default: str | None = None) -> str | None:
        return parser.get(section, option, fallback=default)

    amphora_id = get("amphora_agent", "amphora_id")
    ca = get("amphora_agent", "agent_server_ca")
    cert = get("amphora_agent", "agent_server_cert")
    missing = [
        name
        for name, value in (
            ("amphora_id", amphora_id),
            ("agent_server_ca", ca),
            ("agent_server_cert", cert),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"[amphora_agent] is missing {', '.join(missing)}")
    defaults = AgentConfig(amphora_id="", agent_server_ca=Path(), agent_server_cert=Path())
    try:
        base_path = Path(get("haproxy_amphora", "base_path", str(defaults.base_path)))
        return AgentConfig(
            amphora_id=amphora_id,
            agent_server_ca=Path(ca),
            agent_server_cert=Path(cert),
            base_path=base_path,
            base_cert_dir=Path(
                get("haproxy_amphora", "base_cert_dir", str(base_path / "certs"))
            ),
            bind_host=get("haproxy_amphora", "bind_host", defaults.bind_host),
            bind_port=_port(get("haproxy_amphora", "bind_port", str(defaults.bind_port)),
                            "bind_port"),
            haproxy_cmd=get("haproxy_amphora", "haproxy_cmd", defaults.haproxy_cmd),
            agent_request_read_timeout=_positive(
                get("amphora_agent", "agent_request_read_timeout",
                    str(defaults.agent_request_read_timeout)), "agent_request_read_timeout"
            ),
            loadbalancer_topology=_topology(get(
                "controller_worker", "loadbalancer_topology", defaults.loadbalancer_topology)),
            controller_ip_port_list=_parse_controllers(
                get("health_manager", "controller_ip_port_list", "")
            ),
            heartbeat_interval=_number(
                get("health_manager", "heartbeat_interval", str(defaults.heartbeat_interval)),
                "heartbeat_interval", HEARTBEAT_INTERVAL_S
            ),
            heartbeat_key=get("health_manager", "heartbeat_key", defaults.heartbeat_key),
            network_namespace=get(
                "amphora_agent", "network_namespace", defaults.network_namespace
            ),
            max_request_body_bytes=int(_positive(
                get("amphora_agent", "max_request_body_bytes",
                    str(defaults.max_request_body_bytes)), "max_request_body_bytes"
            )),
            keepalived_cmd=get("amphora_agent", "keepalived_cmd", defaults.keepalived_cmd),
            source_file=source_file,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text, source_file=path)
