"""Statistics deltas that are neither lost nor counted twice.

haproxy's counters live in a worker process and start from zero in every new one; after a
reload the old worker keeps counting (connections it still accepts, bytes of the ones it
drains) next to the new one. So the bookkeeping is per worker:

- every reading of a worker (from the stats socket, or from a session held on an old worker)
  adds (current - last seen from that same worker) of each listener to that listener's
  pending counts, and becomes the worker's last seen;
- a heartbeat reports a listener's pending counts and forgets them.

A worker's counts therefore reach the heartbeats exactly once, in pieces, up to its last
reading; what keeps that last reading final is the caller's business (heartbeat.py holds an
old worker until its counters cannot change). A worker is known by pid and start time, and
forgotten once its process is gone (it can never be read again).

The whole state, and the heartbeat sequence number, is kept in {base_path}/stats_counters.json
so an agent restart neither resets nor repeats anything.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import psutil

from amphora_agent.fsutil import atomic_write
from amphora_agent.haproxy_stats import COUNTER_FIELDS, HaproxyStats
from amphora_agent.processes import is_alive

LOG = logging.getLogger(__name__)


class StatsCounters:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Held by callers across "read haproxy, then account": two readings of one worker must
        # be accounted in the order they were taken.
        self.lock = threading.RLock()
        self._state = self._load()

    def _load(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
            if (isinstance(state, dict) and isinstance(state.get("listeners"), dict)
                    and isinstance(state.get("workers"), dict)):
                return state
            LOG.warning("%s has an unexpected shape; starting from zero", self.path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            LOG.warning("%s is unreadable (%s); starting from zero", self.path, exc)
        # listeners: {listener_id: {"lb": lb_id, "pending": {field: count}}}
        # workers: {pid: {"lb": lb_id, "started": start time, "seen": {listener_id: {field:
        # count}}}}
        return {"seq": 0, "listeners": {}, "workers": {}}

    def save(self) -> None:
        with self.lock:
            data = json.dumps(self._state, sort_keys=True).encode()
        try:
            atomic_write(self.path, data, mode=0o600)
        except OSError as exc:
            LOG.warning("cannot persist statistics counters to %s: %s", self.path, exc)

    def next_seq(self) -> int:
        with self.lock:
            seq = int(self._state.get("seq", 0))
            self._state["seq"] = seq + 1
            return seq

    def account(self, lb_id: str, stats: HaproxyStats, listener_ids: set[str]) -> bool:
        """Add what the worker counted on each listener since its last reading to pending.
        Returns whether the state changed."""
        with self.lock:
            workers = self._state["workers"]
            worker = workers.get(str(stats.pid))
            if worker is None or worker["started"] != stats.started:
                worker = workers[str(stats.pid)] = {"lb": lb_id, "started": stats.started,
                                                    "seen": {}}
            changed = False
            for listener_id, row in stats.frontends().items():
                if listener_id not in listener_ids:
                    continue
                last = worker["seen"].get(listener_id, {})
                current = {name: int(row.get(name) or 0) for name in COUNTER_FIELDS}
                listener = self._state["listeners"].setdefault(
                    listener_id, {"lb": lb_id, "pending": {}})
                pending = listener["pending"]
                for name, value in current.items():
                    previous = int(last.get(name, 0))
                    # A drop within one worker means its counters were cleared: count from zero.
                    delta = value - previous if value >= previous else value
                    pending[name] = int(pending.get(name, 0)) + delta
                changed = changed or current != last
                worker["seen"][listener_id] = current
            return changed

    def take_pending(self, listener_id: str) -> dict[str, int]:
        """The listener's counts not reported yet (zero for each field if none); forgets them."""
        with self.lock:
            listener = self._state["listeners"].get(listener_id)
            pending = listener["pending"] if listener else {}
            if listener:
                listener["pending"] = {}
            return {name: int(pending.get(name, 0)) for name in COUNTER_FIELDS}

    def forget_except(self, lb_ids: set[str]) -> None:
        """Drop the listeners and workers of load balancers that no longer exist, and the
        workers whose process is gone."""
        with self.lock:
            listeners = self._state["listeners"]
            for listener_id in [k for k, v in listeners.items() if v.get("lb") not in lb_ids]:
                del listeners[listener_id]
            workers = self._state["workers"]
            for pid in [k for k, v in workers.items()
                        if v.get("lb") not in lb_ids or not _process_exists(int(k))]:
                del workers[pid]


def _process_exists(pid: int) -> bool:
    try:
        return is_alive(psutil.Process(pid))
    except psutil.Error:
        return False
