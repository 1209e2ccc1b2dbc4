"""Statistics deltas that are neither lost nor counted twice.

haproxy's counters live in a worker and start from zero in every new one (a reload, a restart).
For each listener this keeps the last absolute values seen and which worker (pid) they came
from, plus counts already taken but not yet reported:

- a heartbeat reports (current - last seen) from the same worker, or current from a new one,
  plus whatever is pending, then forgets the pending counts;
- just before a reload or stop, a snapshot moves (current - last seen) of the old worker into
  pending, so what the old worker counted since the last heartbeat is reported once, later.

The whole state, and the heartbeat sequence number, is kept in {base_path}/stats_counters.json
so an agent restart neither resets nor repeats anything.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from amphora_agent.fsutil import atomic_write
from amphora_agent.haproxy_stats import COUNTER_FIELDS

LOG = logging.getLogger(__name__)


class StatsCounters:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Held by callers across "read haproxy, then account": a snapshot must never interleave
        # with a heartbeat's read of the same worker.
        self.lock = threading.RLock()
        self._state = self._load()

    def _load(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
            if isinstance(state, dict) and isinstance(state.get("listeners"), dict):
                return state
            LOG.warning("%s has an unexpected shape; starting from zero", self.path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            LOG.warning("%s is unreadable (%s); starting from zero", self.path, exc)
        return {"seq": 0, "listeners": {}}

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

    def _since_last_seen(self, lb_id: str, listener_id: str, pid: int,
                         row: dict[str, str]) -> dict[str, int]:
        """Counts since the previous read, recording this read as the new last seen."""
        entry = self._state["listeners"].setdefault(
            listener_id, {"lb": lb_id, "pid": None, "seen": {}, "pending": {}})
        same_worker = entry["pid"] == pid
        delta = {}
        seen = {}
        for name in COUNTER_FIELDS:
            current = int(row.get(name) or 0)
            last = int(entry["seen"].get(name, 0)) if same_worker else 0
            # A drop within one worker means its counters were cleared: count from zero.
            delta[name] = current - last if current >= last else current
            seen[name] = current
        entry.update(lb=lb_id, pid=pid, seen=seen)
        return delta

    def take_deltas(self, lb_id: str, pid: int,
                    frontends: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
        """Per listener (frontend row of worker pid): counts to report now, pending included."""
        result = {}
        with self.lock:
            for listener_id, row in frontends.items():
                delta = self._since_last_seen(lb_id, listener_id, pid, row)
                pending = self._state["listeners"][listener_id]["pending"]
                result[listener_id] = {name: delta[name] + int(pending.get(name, 0))
                                       for name in COUNTER_FIELDS}
                self._state["listeners"][listener_id]["pending"] = {}
        return result

    def snapshot(self, lb_id: str, pid: int, frontends: dict[str, dict[str, str]]) -> None:
        """Bank what worker pid, about to be replaced, counted since it was last read."""
        with self.lock:
            for listener_id, row in frontends.items():
                delta = self._since_last_seen(lb_id, listener_id, pid, row)
                pending = self._state["listeners"][listener_id]["pending"]
                for name in COUNTER_FIELDS:
                    pending[name] = int(pending.get(name, 0)) + delta[name]

    def forget_except(self, lb_ids: set[str]) -> None:
        """Drop the listeners of load balancers that no longer exist."""
        with self.lock:
            listeners = self._state["listeners"]
            for listener_id in [k for k, v in listeners.items() if v.get("lb") not in lb_ids]:
                del listeners[listener_id]
