"""Health heartbeats: every heartbeat_interval seconds, one signed UDP datagram per controller.

The datagram is zlib.compress(json, 9) followed by the hex HMAC-SHA256 of the compressed bytes
under heartbeat_key. The JSON is Octavia's message version 3: listener status and statistics
deltas from each running haproxy's stats socket, and pool/member statuses.

A PUT /1.0/config that changes the interval, the key or the controllers hands the sender the new
configuration (reconfigure()), which takes effect at once: the current wait is cut short.
Nothing that goes wrong in one tick (an unresolvable controller, an unreachable network, a
haproxy that does not answer) stops the thread.

Deltas across a reload (stats_counters.py does the per-worker arithmetic): the worker a reload
replaces keeps accepting connections until the new one has taken the listeners over, then
drains the connections it has, then exits; what it counted after the agent's last reading
would be lost. So just before a reload (or stop) the collector opens a stats socket session on
the running worker and holds it (see haproxy_stats.StatsSession): the old worker cannot exit
while it is open. A second thread reads every held worker each DRAIN_POLL_S and lets it go
once it is drained, i.e. its listeners are closed and it has no connection left, when its
counters are final; that last reading is accounted like any other, so the old worker's counts
reach the heartbeats exactly once. A held worker that exits anyway (killed, hard-stop-after)
keeps the counts of its last reading.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amphora_agent.config import AgentConfig
from amphora_agent.haproxy import RELOAD_TIMEOUT_S, HaproxySupervisor
from amphora_agent.haproxy_config import HaproxyConfig
from amphora_agent.haproxy_stats import HaproxyStats, StatsSession, member_status, read_stats
from amphora_agent.keepalived import KeepalivedSupervisor
from amphora_agent.processes import POLL_S
from amphora_agent.stats_counters import StatsCounters

LOG = logging.getLogger(__name__)

MESSAGE_VERSION = 3
# How long the sender waits after a tick that failed (rather than spin on a repeating error).
RETRY_AFTER_ERROR_S = 1.0
COUNTERS_FILE = "stats_counters.json"
# How often held workers are read: an old worker lingers at most this long after it drained
# (and the read keeps the session from haproxy's idle `stats timeout`, 10 s by default).
DRAIN_POLL_S = 0.1
# A held worker that has still not been told to stop this long after the hook was not replaced
# (the reload failed): let it go.
HOLD_LIMIT_S = 2 * RELOAD_TIMEOUT_S
# How long the hook keeps asking for the running worker while only held ones answer.
HOLD_ATTEMPTS_S = 2.0


def wrap_envelope(message: dict[str, Any], key: str) -> bytes:
    payload = zlib.compress(json.dumps(message).encode(), 9)
    return payload + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest().encode()


@dataclass
class HeldWorker:
    """A haproxy worker kept from exiting by an open stats session, until it is drained."""

    lb_id: str
    session: StatsSession
    since: float  # time.monotonic() when it was taken


class HealthCollector:
    """Builds version-3 messages from the haproxy stats sockets; owns the delta bookkeeping and
    the workers held across reloads."""

    def __init__(self, haproxy: HaproxySupervisor, counters: StatsCounters) -> None:
        self.haproxy = haproxy
        self.counters = counters
        self._held: dict[int, HeldWorker] = {}  # by pid; guarded by counters.lock
        haproxy.reload_hooks.append(self.hold_worker)

    def hold_worker(self, lb_id: str) -> None:
        """Reload and stop hook: account for the running worker and hold a session on it, so
        that it cannot exit before poll_held() has read its final counts."""
        stats_socket = self.haproxy.stats_socket(lb_id)
        if stats_socket is None or not self.haproxy.is_running(lb_id):
            return
        # Right after a reload, the worker it replaced (held already) may share the stats
        # socket for a moment, until it is told to stop: ask again until the running one
        # answers.
        deadline = time.monotonic() + HOLD_ATTEMPTS_S
        while not self._try_hold(lb_id, stats_socket):
            if time.monotonic() > deadline:
                LOG.warning("every haproxy worker of %s that answered is held already", lb_id)
                return
            time.sleep(POLL_S)

    def _try_hold(self, lb_id: str, stats_socket: Path) -> bool:
        """Open a session on whichever worker answers and account for it; keep it if that
        worker is not held yet. False when it was, True when done (held, or failed)."""
        # Reading and accounting under one lock: readings of a worker are accounted in order.
        with self.counters.lock:
            session = None
            try:
                session = StatsSession(stats_socket)
                stats = session.read()
            except OSError as exc:
                if session is not None:
                    session.close()
                LOG.warning("cannot hold the haproxy worker of %s: %s", lb_id, exc)
                return True
            self._account(lb_id, stats, self.haproxy.parsed_config(lb_id))
            self.counters.save()
            if stats.pid in self._held:
                session.close()
                return False
            self._held[stats.pid] = HeldWorker(lb_id, session, time.monotonic())
            return True

    def poll_held(self) -> None:
        """Read every held worker once; let go of those that are drained or gone."""
        with self.counters.lock:
            changed = False
            for pid, held in list(self._held.items()):
                try:
                    stats = held.session.read()
                except OSError:
                    # It exited (haproxy stopped or killed, hard-stop-after): its last reading
                    # stands.
                    self._release(pid)
                    continue
                changed |= self._account(held.lb_id, stats,
                                         self.haproxy.parsed_config(held.lb_id))
                not_replaced = time.monotonic() - held.since > HOLD_LIMIT_S and not stats.stopping
                if stats.drained or not_replaced:
                    self._release(pid)
            if changed:
                self.counters.save()

    def _release(self, pid: int) -> None:
        self._held.pop(pid).session.close()

    def _account(self, lb_id: str, stats: HaproxyStats, config: HaproxyConfig) -> bool:
        return self.counters.account(lb_id, stats, set(config.listeners))

    def build_message(self, amphora_id: str) -> dict[str, Any]:
        listeners: dict[str, Any] = {}
        pools: dict[str, Any] = {}
        with self.counters.lock:
            lb_ids = self.haproxy.lb_ids()
            for lb_id in lb_ids:
                stats = self._read_current_worker(lb_id)
                if stats is None:
                    continue
                config = self.haproxy.parsed_config(lb_id)
                self._account(lb_id, stats, config)
                for listener_id, row in stats.frontends().items():
                    if listener_id not in config.listeners:
                        continue
                    delta = self.counters.take_pending(listener_id)
                    listeners[listener_id] = {
                        "status": row.get("status", ""),
                        "stats": {"tx": delta["bout"], "rx": delta["bin"],
                                  "conns": int(row.get("scur") or 0),
                                  "totconns": delta["stot"], "ereq": delta["ereq"]},
                    }
                pools.update(_pool_statuses(stats.rows, config.pools))
            self.counters.forget_except(set(lb_ids))
            message = {"id": amphora_id, "seq": self.counters.next_seq(), "ver": MESSAGE_VERSION,
                       "listeners": listeners, "pools": pools}
            self.counters.save()
        return message

    def _read_current_worker(self, lb_id: str) -> HaproxyStats | None:
        """A reading of the worker that answers on the stats socket, or None."""
        stats_socket = self.haproxy.stats_socket(lb_id)
        if stats_socket is None or not self.haproxy.is_running(lb_id):
            return None
        try:
            return read_stats(stats_socket)
        except OSError as exc:
            LOG.warning("no statistics from haproxy of %s: %s", lb_id, exc)
            return None


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

    def __init__(self, config: AgentConfig, collector: HealthCollector,
                 keepalived: KeepalivedSupervisor) -> None:
        self._config = config
        self._collector = collector
        self._keepalived = keepalived
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._sockets: dict[int, socket.socket] = {}
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._drain_thread = threading.Thread(target=self._poll_held, name="held-workers",
                                              daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._drain_thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._drain_thread.join(timeout=5)
        for sock in self._sockets.values():
            sock.close()

    def reconfigure(self, config: AgentConfig) -> None:
        """Use config's interval, key and controllers from now on, starting with a heartbeat
        sent at once."""
        self._config = config
        self._wake.set()

    def _run(self) -> None:
        LOG.info("heartbeat sender started")
        while not self._stopping.is_set():
            # Everything of a tick, the wait included, is inside the try: the thread must
            # outlive any one bad tick, or the controller fails this amphora over.
            try:
                self.send_once()
                self._sleep(self._config.heartbeat_interval)
            except Exception:
                LOG.exception("heartbeat tick failed")
                self._sleep(RETRY_AFTER_ERROR_S)

    def _sleep(self, seconds: float) -> None:
        """Wait seconds, or until reconfigure() or stop() wakes the sender."""
        self._wake.wait(seconds)
        self._wake.clear()

    def _poll_held(self) -> None:
        # Runs with or without controllers: a held worker must be let go either way.
        while not self._stopping.wait(DRAIN_POLL_S):
            try:
                self._collector.poll_held()
            except Exception:  # the thread must outlive any one bad poll
                LOG.exception("reading held haproxy workers failed")

    def send_once(self) -> int:
        """Build one message and send it to every controller; returns how many got it."""
        config = self._config
        if not config.controller_ip_port_list:
            return 0  # keep the deltas for when a controller is configured
        keepalived = self._keepalived
        if keepalived.configured() and not keepalived.is_running():
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


def start_heartbeat(config: AgentConfig, haproxy: HaproxySupervisor,
                    keepalived: KeepalivedSupervisor) -> HeartbeatSender:
    """Start sending heartbeats about the load balancers of haproxy."""
    counters = StatsCounters(config.base_path / COUNTERS_FILE)
    sender = HeartbeatSender(config, HealthCollector(haproxy, counters), keepalived)
    sender.start()
    return sender
