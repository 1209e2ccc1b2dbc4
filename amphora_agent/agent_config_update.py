"""PUT /1.0/config: a new agent configuration file from the controller.

The whole file is validated first; a file that does not parse changes nothing. A valid one
replaces the config file on disk (atomically) and, at once, the options Octavia treats as
mutable: the heartbeat interval, key and controller list. Everything else (addresses, paths,
certificates, ...) takes effect when the agent next starts, as with Octavia's agent.

Since the rest only matters at the next start, a file that would keep that start from serving
is refused now, while the controller can still hear why: config.py checks every value's range;
here each value that differs from the running one is tried on the host (the running ones are
proven by the agent serving).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import tempfile
from pathlib import Path

from amphora_agent.config import AgentConfig, ConfigError, parse_config
from amphora_agent.fsutil import atomic_write
from amphora_agent.server import make_tls_context

# The options a running agent applies without a restart.
LIVE_OPTIONS = ("controller_ip_port_list", "heartbeat_interval", "heartbeat_key")


def live_update(current: AgentConfig, new: AgentConfig) -> AgentConfig:
    """current with the live options taken from new."""
    return dataclasses.replace(current, **{name: getattr(new, name) for name in LIVE_OPTIONS})


def update_agent_config(current: AgentConfig, data: bytes) -> AgentConfig:
    """Validate and persist a new config file; returns the configuration to run with now
    (current with the live options of the new file). Raises ConfigError and changes nothing
    when the file is not acceptable."""
    if current.source_file is None:
        raise ConfigError("the agent was not started from a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the file is not UTF-8: {exc}") from exc
    new = parse_config(text, source_file=current.source_file)
    check_startable(current, new)
    try:
        atomic_write(current.source_file, data, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {current.source_file}: {exc.strerror}") from exc
    return live_update(current, new)


def check_startable(current: AgentConfig, new: AgentConfig) -> None:
    """Raise ConfigError when a value of new that differs from current would fail the next
    start: a certificate that does not load, an address that cannot be bound, a state
    directory that cannot be written, a binary that cannot run."""

    def changed(*names: str) -> bool:
        return any(getattr(new, name) != getattr(current, name) for name in names)

    if changed("agent_server_cert", "agent_server_ca"):
        try:
            make_tls_context(new.agent_server_cert, new.agent_server_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"agent_server_cert and agent_server_ca do not load: {exc}") from exc
    if changed("bind_host", "bind_port"):
        _check_bindable(new.bind_host, new.bind_port)
    for name in ("base_path", "base_cert_dir"):
        if changed(name):
            _check_writable_dir(getattr(new, name), name)
    for name in ("haproxy_cmd", "keepalived_cmd"):
        command = getattr(new, name)
        if changed(name) and not (os.path.isfile(command) and os.access(command, os.X_OK)):
            raise ConfigError(f"{name}: {command} is not an executable file")


def _check_bindable(host: str, port: int) -> None:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"bind_host, bind_port: cannot listen on {host}:{port}: {exc}") from exc


def _check_writable_dir(path: Path, what: str) -> None:
    """path is a directory the agent can write files in, or can create as one: a file can be
    made in it or in its nearest existing ancestor (as root, access() says yes even to /proc)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{what}: {path} cannot be written: {exc}") from exc
