"""The agent's long-lived services: built once at start (main.py), handed to every handler."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from amphora_agent.config import AgentConfig
from amphora_agent.desired_state import DesiredState
from amphora_agent.haproxy import HaproxySupervisor
from amphora_agent.heartbeat import HeartbeatSender
from amphora_agent.keepalived import KeepalivedSupervisor
from amphora_agent.plug import Plugger
from amphora_agent.server import ServerTls
from amphora_agent.vip_firewall import VipFirewall


class KeyedLocks:
    """One lock per key (a load balancer id): requests on one load balancer are serialized,
    requests on different ones are not."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks[key]


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
