"""PUT /1.0/config: a new agent configuration file from the controller.

The whole file is validated first; a file that does not parse changes nothing. A valid one
replaces the config file on disk (atomically) and, at once, the options Octavia treats as
mutable: the heartbeat interval, key and controller list. Everything else (addresses, paths,
certificates, ...) takes effect when the agent next starts, as with Octavia's agent.
"""

from __future__ import annotations

import dataclasses

from amphora_agent.config import AgentConfig, ConfigError, parse_config
from amphora_agent.fsutil import atomic_write

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
    try:
        atomic_write(current.source_file, data, mode=0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {current.source_file}: {exc.strerror}") from exc
    return live_update(current, new)
