"""The agent's configuration file: Octavia's INI sections and option names.

Options Octavia knows but we do not use are accepted and ignored, so a config file written for
Octavia's agent works here unchanged. A few options of our own (marked below) exist so that tests
can run several agents on one host.

Every value is checked against a range here, at start and for PUT /1.0/config alike: no
accepted value may stop or spin one of the agent's threads (a timeout too large for the OS, a
zero interval) or keep the next start from serving. What only the host can tell (can this
address be bound, does this certificate load) is checked by agent_config_update.py.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """The configuration file is unreadable or has a bad value."""


# systemd's DefaultStartLimitIntervalSec, which Octavia's haproxy unit keeps (haproxy.StartLimit).
START_LIMIT_INTERVAL_S = 10.0


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
    # Ours: the StartLimitIntervalSec of every load balancer's haproxy (5 starts within it and a
    # crashing haproxy is left down). Tests of the limit set it long, so that a slow machine's 5
    # starts still fall within it.
    haproxy_start_limit_interval: float = START_LIMIT_INTERVAL_S
    # The file this config was read from; PUT /1.0/config rewrites it.
    source_file: Path | None = field(default=None, compare=False)

    @property
    def vrrp_dir(self) -> Path:
        return self.base_path / "vrrp"


TOPOLOGIES = ("SINGLE", "ACTIVE_STANDBY")
PORTS = (1, 65535)
# Above an hour the controller has long failed the amphora over; and a wait as long as 1e10 s
# overflows the C timeout of the heartbeat thread's wait.
HEARTBEAT_INTERVAL_S = (0.1, 3600.0)
# What a socket timeout can be: 1e300 overflows it and every connection would die.
REQUEST_READ_TIMEOUT_S = (1.0, 3600.0)
# A whole body is held in memory; a limit below 1 KiB would refuse the smallest certificate.
REQUEST_BODY_BYTES = (1024, 1024**3)
# Below a second, 5 starts (each RestartSec and a haproxy -c after a crash) may never fall within
# it, and a crash loop would go on for ever. A day is far beyond any crash loop.
START_LIMIT_INTERVAL_RANGE_S = (1.0, 86400.0)
MAX_CONTROLLERS = 64
# A name `ip netns add` takes (it becomes a file in /run/netns).
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


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


def _integer(value: str, what: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    try:
        number = int(value, 10)
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r} is not an integer") from exc
    if not low <= number <= high:
        raise ConfigError(f"{what}: {value!r} is not in {low}..{high}")
    return number


def _host(value: str, what: str) -> str:
    """An IP address or a host name (Octavia's HostAddressOpt)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(value):
        raise ConfigError(f"{what}: {value!r} is neither an IP address nor a host name")
    return value


def _absolute_path(value: str, what: str) -> Path:
    if not value.startswith("/") or "\0" in value:
        raise ConfigError(f"{what}: {value!r} is not an absolute path")
    return Path(value)


def _namespace(value: str) -> str:
    if value and not _NAMESPACE.fullmatch(value):
        raise ConfigError(f"network_namespace: {value!r} is not a namespace name "
                          "(letters, digits, '_', '.', '-'; at most 64)")
    return value


def _parse_controllers(value: str) -> tuple[tuple[str, int], ...]:
    controllers = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"controller_ip_port_list: {item!r} is not HOST:PORT")
        controllers.append((_host(host.strip("[]"), "controller_ip_port_list"),
                            _integer(port, "controller_ip_port_list", PORTS)))
    if len(controllers) > MAX_CONTROLLERS:
        raise ConfigError(f"controller_ip_port_list: more than {MAX_CONTROLLERS} controllers")
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

    def get(section: str, option: str, default: object = None) -> str | None:
        value = parser.get(section, option, fallback=None)
        return value if value is not None or default is None else str(default)

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
    base_path = _absolute_path(get("haproxy_amphora", "base_path", defaults.base_path),
                               "base_path")
    return AgentConfig(
        amphora_id=amphora_id,
        agent_server_ca=_absolute_path(ca, "agent_server_ca"),
        agent_server_cert=_absolute_path(cert, "agent_server_cert"),
        base_path=base_path,
        base_cert_dir=_absolute_path(
            get("haproxy_amphora", "base_cert_dir", base_path / "certs"), "base_cert_dir"),
        bind_host=_host(get("haproxy_amphora", "bind_host", defaults.bind_host), "bind_host"),
        bind_port=_integer(get("haproxy_amphora", "bind_port", defaults.bind_port),
                           "bind_port", PORTS),
        haproxy_cmd=str(_absolute_path(
            get("haproxy_amphora", "haproxy_cmd", defaults.haproxy_cmd), "haproxy_cmd")),
        agent_request_read_timeout=_number(
            get("amphora_agent", "agent_request_read_timeout",
                defaults.agent_request_read_timeout),
            "agent_request_read_timeout", REQUEST_READ_TIMEOUT_S),
        loadbalancer_topology=_topology(get(
            "controller_worker", "loadbalancer_topology", defaults.loadbalancer_topology)),
        controller_ip_port_list=_parse_controllers(
            get("health_manager", "controller_ip_port_list", "")),
        heartbeat_interval=_number(
            get("health_manager", "heartbeat_interval", defaults.heartbeat_interval),
            "heartbeat_interval", HEARTBEAT_INTERVAL_S),
        heartbeat_key=get("health_manager", "heartbeat_key", defaults.heartbeat_key),
        network_namespace=_namespace(
            get("amphora_agent", "network_namespace", defaults.network_namespace)),
        max_request_body_bytes=_integer(
            get("amphora_agent", "max_request_body_bytes", defaults.max_request_body_bytes),
            "max_request_body_bytes", REQUEST_BODY_BYTES),
        keepalived_cmd=str(_absolute_path(
            get("amphora_agent", "keepalived_cmd", defaults.keepalived_cmd), "keepalived_cmd")),
        haproxy_start_limit_interval=_number(
            get("amphora_agent", "haproxy_start_limit_interval",
                defaults.haproxy_start_limit_interval),
            "haproxy_start_limit_interval", START_LIMIT_INTERVAL_RANGE_S),
        source_file=source_file,
    )


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_config(text, source_file=path)
