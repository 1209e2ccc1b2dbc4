"""The agent's long-lived services: built once at start (main.py), handed to every handler."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from amphora_agent.config import AgentConfig
from amphora_agent.desired_state import DesiredState
from amphora_agent.haproxy import HaproxySupervisor
from amphora_agent.heartbeat import HeartbeatSender
from amphora_agent.keepalived import KeepalivedSupervisor
from amphora_agent.plug import Plugger
from amphora_agent.server import ServerTls
from amphora_agent.vip_firewall import VipFirewall


@dataclass
class _Holders:
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0  # requests holding or waiting for the lock


class KeyedLocks:
    """One lock per key (a load balancer id): requests on one load balancer are serialized,
    requests on different ones are not.

    A key's lock exists only while some request holds it or waits for it, so the table is as
    large as the requests in flight: ids that come once (a DELETE of an unknown id) leave
    nothing behind.
    """

    def __init__(self) -> None:
        self._holders: dict[str, _Holders] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            holders = self._holders.get(key)
            if holders is None:
                holders = self._holders[key] = _Holders()
            holders.count += 1
        try:
            with holders.lock:
                yield
        finally:
            with self._guard:
                holders.count -= 1
                if holders.count == 0:
                    del self._holders[key]


@dataclass
class AgentServices:
    # Replaced as a whole by PUT /1.0/config (AgentConfig is frozen: a handler that read it
    # keeps a consistent object).
    config: AgentConfig
    haproxy: HaproxySupervisor
    keepalived: KeepalivedSupervisor
    desired: DesiredState
    plugger: Plugger
    firewall: VipFirewall
    heartbeat: HeartbeatSender
    server_tls: ServerTls
    lb_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Plugs and the VIP firewall change the data-plane namespace: one at a time.
    plug_lock: threading.Lock = field(default_factory=threading.Lock)
    vrrp_lock: threading.Lock = field(default_factory=threading.Lock)
    config_lock: threading.Lock = field(default_factory=threading.Lock)
    # A server certificate rotation: file write and TLS context swap together.
    server_cert_lock: threading.Lock = field(default_factory=threading.Lock)
