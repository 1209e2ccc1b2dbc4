"""What every request handler shares: the configuration, locks, and the supervisors."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from amphora_agent.config import AgentConfig

if TYPE_CHECKING:
    from amphora_agent.server import AgentServer

EXTENSION_KEY = "amphora_agent"


@dataclass
class AgentContext:
    config: AgentConfig
    # Set by main once the server exists (certificate rotation swaps its TLS context).
    server: AgentServer | None = None
    # Supervisors and services, filled in by main: "haproxy", "keepalived", "heartbeat", ...
    services: dict[str, Any] = field(default_factory=dict)
    _locks: defaultdict[str, threading.RLock] = field(
        default_factory=lambda: defaultdict(threading.RLock)
    )
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: str) -> threading.RLock:
        """The lock that serializes every request touching one load balancer (or 'vrrp', ...)."""
        with self._locks_guard:
            return self._locks[key]


def ctx() -> AgentContext:
    """The AgentContext of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
