"""What the agent reads out of an uploaded haproxy.cfg, following the driver's naming convention.

The driver names things so the agent can find them again: `frontend <listener_id>` (its `mode`
says HTTP or TCP; a `bind ... ssl crt-list ...` makes it TERMINATED_HTTPS),
`backend <pool_id>:<listener_id>` with `server <member_id> ...` lines, and one `stats socket`
in `global`. Frontends whose names are not UUIDs (such as the Prometheus exporter's internal
endpoint) are not listeners and are left out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from amphora_agent.names import is_uuid

# Keywords that open a section; any other non-indented keyword still belongs to the current one.
_SECTION_KEYWORDS = frozenset(
    {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
     "mailers", "program", "http-errors", "ring", "cache"}
)


@dataclass(frozen=True)
class Listener:
    listener_id: str
    # HTTP, TCP or TERMINATED_HTTPS, as the Amphora API reports a listener's type.
    type: str


@dataclass(frozen=True)
class Pool:
    pool_id: str
    listener_id: str
    member_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        """The backend's name in the config and in haproxy's statistics."""
        return f"{self.pool_id}:{self.listener_id}"


@dataclass(frozen=True)
class HaproxyConfig:
    stats_socket: Path | None = None
    server_state_file: Path | None = None
    listeners: dict[str, Listener] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)  # by backend name
    # The IP addresses of every `bind` line (the VIPs), in order, once each.
    bind_addresses: tuple[str, ...] = ()


@dataclass
class _Section:
    keyword: str
    name: str
    lines: list[list[str]] = field(default_factory=list)

    def first(self, keyword: str) -> list[str] | None:
        return next((words for words in self.lines if words[0] == keyword), None)


def _words(line: str) -> list[str]:
    """A config line split into words, its comment dropped. Only leading keywords and names
    matter here, so quoting inside arguments (where a '#' could hide) needs no handling."""
    return line.split("#", 1)[0].split()


def _sections(text: str) -> list[_Section]:
    sections: list[_Section] = []
    for raw in text.splitlines():
        words = _words(raw)
        if not words:
            continue
        if not raw[:1].isspace() and words[0] in _SECTION_KEYWORDS:
            sections.append(_Section(words[0], words[1] if len(words) > 1 else ""))
        elif sections:
            sections[-1].lines.append(words)
    return sections


def _is_tls_terminating(frontend: _Section) -> bool:
    return any(
        words[0] == "bind" and "ssl" in words and ("crt-list" in words or "crt" in words)
        for words in frontend.lines
    )


def _mode(section: _Section, default: str) -> str:
    words = section.first("mode")
    return words[1].upper() if words and len(words) > 1 else default


def _bind_address(spec: str) -> str | None:
    """The IP address of one address of a bind line ("10.0.0.5:80", "[2001:db8::5]:80",
    "2001:db8::5:80", "ipv4@10.0.0.5:80"), or None for what is not one (a UNIX socket, "*",
    an unspecified address)."""
    family, at, rest = spec.partition("@")
    if at:
        if family not in ("ipv4", "ipv6"):
            return None
        spec = rest
    host = spec[1:].partition("]")[0] if spec.startswith("[") else spec.rpartition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


def parse_haproxy_config(text: str) -> HaproxyConfig:
    """Parse an uploaded haproxy.cfg (already accepted by `haproxy -c`)."""
    stats_socket = server_state_file = None
    default_mode = "TCP"  # haproxy's own default
    listeners: dict[str, Listener] = {}
    pools: dict[str, Pool] = {}
    bind_addresses: dict[str, None] = {}
    for section in _sections(text):
        for words in section.lines:
            if words[0] == "bind" and len(words) > 1:
                for spec in words[1].split(","):
                    address = _bind_address(spec)
                    if address is not None:
                        bind_addresses[address] = None
        if section.keyword == "global":
            for words in section.lines:
                # Only a UNIX socket path is a file the agent can talk to ("ipv4@..." is not).
                if words[:2] == ["stats", "socket"] and len(words) > 2 and stats_socket is None:
                    if words[2].startswith("/"):
                        stats_socket = Path(words[2])
                elif words[0] == "server-state-file" and len(words) > 1:
                    server_state_file = Path(words[1])
        elif section.keyword == "defaults":
            default_mode = _mode(section, default_mode)
        elif section.keyword == "frontend" and is_uuid(section.name):
            kind = "TERMINATED_HTTPS" if _is_tls_terminating(section) else _mode(
                section, default_mode)
            listeners[section.name] = Listener(section.name, kind)
        elif section.keyword == "backend":
            pool_id, sep, listener_id = section.name.partition(":")
            if sep and is_uuid(pool_id) and is_uuid(listener_id):
                members = tuple(w[1] for w in section.lines if w[0] == "server" and len(w) > 1)
                pools[section.name] = Pool(pool_id, listener_id, members)
    return HaproxyConfig(stats_socket, server_state_file, listeners, pools,
                         tuple(bind_addresses))


def httpclient_unreachable(text: str) -> bool:
    """Whether nothing in a haproxy serving this config can use haproxy's internal HTTP client.

    In haproxy 2.6 only Lua scripts (core.httpclient) and the CLI's `httpclient` command use
    it, and that command needs expert mode, which only a stats socket of level admin can turn
    on (the default level is operator; Octavia's template says `level user`). Judged on every
    word of every line, comments and quotes included, so that no quoting hides a keyword: a
    config with a word starting with lua- or httpclient (it loads Lua or sets the client up
    itself) or a stats line naming admin is taken as one that may use the client.
    """
    for raw in text.splitlines():
        words = [word.strip("\"'") for word in raw.split()]
        if any(word.startswith(("lua-", "httpclient")) for word in words):
            return False
        if words and words[0] == "stats" and any("admin" in word for word in words):
            return False
    return True
