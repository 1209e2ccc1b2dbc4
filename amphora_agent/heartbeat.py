"""Health heartbeats: every heartbeat_interval seconds, one signed UDP datagram per controller.

The datagram is zlib.compress(json, 9) followed by the hex HMAC-SHA256 of the compressed bytes
under heartbeat_key. The JSON is Octavia's message version 3: listener status and statistics
deltas from each running haproxy's stats socket, and pool/member statuses.

The sender reads the configuration from the agent context at every tick, so a PUT /1.0/config
that changes the interval, the key or the controllers takes effect at once (wake() cuts the
current wait short). Nothing that goes wrong in one tick (an unresolvable controller, an
unreachable network, a haproxy that does not answer) stops the thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import zlib
from collections.abc import Collection
from typing import Any

from amphora_agent.context import AgentContext
from amphora_agent.haproxy import HaproxySupervisor
from amphora_agent.haproxy_stats import member_status, read_stats
from amphora_agent.stats_counters import StatsCounters

LOG = logging.getLogger(__name__)

MESSAGE_VERSION = 3
# A zero or negative interval in the config must not turn the sender into a busy loop.
MIN_INTERVAL_S = 0.1
COUNTERS_FILE = "stats_counters.json"


def wrap_envelope(message: dict[str, Any], key: str) -> bytes:
    payload = zlib.compress(json.dumps(message).encode(), 9)
    return payload + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest().encode()


class HealthCollector:
    """Builds version-3 messages from the haproxy stats sockets; owns the delta bookkeeping."""

    def __init__(self, haproxy: HaproxySupervisor, counters: StatsCounters) -> None:
        self.haproxy = haproxy
        self.counters = counters
        # Bank the old worker's counts just before haproxy replaces it.
        haproxy.reload_hooks.append(self.snapshot)

    def snapshot(self, lb_id: str) -> None:
        """Reload hook: account for what the running worker counted since the last heartbeat."""
        with self.counters.lock:
            read = self._listener_stats(lb_id)
            if read is not None:
                pid, frontends, _ = read
                self.counters.snapshot(lb_id, pid, frontends)
                self.counters.save()

    def _listener_stats(self, lb_id: str) -> tuple[int, dict, list[dict[str, str]]] | None:
        """(worker pid, listener frontend rows, all rows) of a running haproxy, or None."""
        stats_socket = self.haproxy.stats_socket(lb_id)
        if stats_socket is None or not self.haproxy.is_running(lb_id):
            return None
        try:
            stats = read_stats(stats_socket)
        except OSError as exc:
            LOG.warning("no statistics from haproxy of %s: %s", lb_id, exc)
            return None
        listeners = self.haproxy.parsed_config(lb_id).listeners
        frontends = {name: row for name, row in stats.frontends().items() if name in listeners}
        return stats.pid, frontends, stats.rows

    def build_message(self, amphora_id: str) -> dict[str, Any]:
        listeners: dict[str, Any] = {}
        pools: dict[str, Any] = {}
        with self.counters.lock:
            lb_ids = self.haproxy.lb_ids()
            for lb_id in lb_ids:
                read = self._listener_stats(lb_id)
                if read is None:
                    continue
                pid, frontends, rows = read
                deltas = self.counters.take_deltas(lb_id, pid, frontends)
                for listener_id, row in frontends.items():
                    delta = deltas[listener_id]
                    listeners[listener_id] = {
                        "status": row.get("status", ""),
                        "stats": {"tx": delta["bout"], "rx": delta["bin"],
                                  "conns": int(row.get("scur") or 0),
                                  "totconns": delta["stot"], "ereq": delta["ereq"]},
                    }
                pools.update(_pool_statuses(rows, self.haproxy.parsed_config(lb_id).pools))
            self.counters.forget_except(set(lb_ids))
            message = {"id": amphora_id, "seq": self.counters.next_seq(), "ver": MESSAGE_VERSION,
                       "listeners": listeners, "pools": pools}
            self.counters.save()
        return message


def _pool_statuses(rows: list[dict[str, str]], pool_names: Collection[str]) -> dict[str, Any]:
    """{"<pool_id>:<listener_id>": {"status": ..., "members": {member_id: status}}}."""
    pools: dict[str, Any] = {}
    for row in rows:
        name = row.get("pxname", "")
        if name not in pool_names:
            continue
        pool = pools.setdefault(name, {"status": "DOWN", "members": {}})
        if row.get("svname") == "BACKEND":
            pool["status"] = row.get("status", "DOWN")
        elif row.get("svname") != "FRONTEND":
            pool["members"][row["svname"]] = member_status(row)
    return pools


class HeartbeatSender:
    """The background thread that sends heartbeats."""

    def __init__(self, context: AgentContext, collector: HealthCollector) -> None:
        self._context = context
        self._collector = collector
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sockets: dict[int, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        for sock in self._sockets.values():
            sock.close()

    def wake(self) -> None:
        """Send the next heartbeat now (after a configuration change)."""
        self._wake.set()

    def _run(self) -> None:
        LOG.info("heartbeat sender started")
        while not self._stopping.is_set():
            try:
                self.send_once()
            except Exception:  # the thread must outlive any one bad tick
                LOG.exception("heartbeat tick failed")
            interval = max(self._context.config.heartbeat_interval, MIN_INTERVAL_S)
            self._wake.wait(interval)
            self._wake.clear()

    def send_once(self) -> int:
        """Build one message and send it to every controller; returns how many got it."""
        config = self._context.config
        if not config.controller_ip_port_list:
            return 0  # keep the deltas for when a controller is configured
        keepalived = self._context.services.get("keepalived")
        if keepalived is not None and keepalived.configured() and not keepalived.is_running():
            # As Octavia's amphorae: silence makes the controller fail this amphora over.
            LOG.warning("keepalived is configured but not running: no heartbeat")
            return 0
        envelope = wrap_envelope(self._collector.build_message(config.amphora_id),
                                 config.heartbeat_key)
        return sum(self._send(envelope, host, port)
                   for host, port in config.controller_ip_port_list)

    def _send(self, envelope: bytes, host: str, port: int) -> bool:
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            sock = self._sockets.get(family)
            if sock is None:
                sock = self._sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.sendto(envelope, address)
        except OSError as exc:  # unresolvable, unreachable (e.g. while networks come up)
            LOG.warning("heartbeat to %s:%s not sent: %s", host, port, exc)
            return False
        return True


def start_heartbeat(context: AgentContext) -> HeartbeatSender:
    """Start sending heartbeats for the agent in context (its haproxy supervisor must exist)."""
    counters = StatsCounters(context.config.base_path / COUNTERS_FILE)
    sender = HeartbeatSender(context, HealthCollector(context.services["haproxy"], counters))
    context.services["heartbeat"] = sender
    sender.start()
    return sender
