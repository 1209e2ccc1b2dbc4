"""What the controller asked this amphora to run, kept on disk for the amphora's next boot.

On a VM amphora systemd keeps this: a started load balancer's haproxy service and keepalived are
enabled units, and a reboot starts them again without the controller. Here it is one file,
{base_path}/desired_state.json:

    {"load_balancers": {lb_id: "running" | "stopped"}, "keepalived": "running" | "stopped"}

It changes only through the API (start, reload, stop and delete of a load balancer; vrrp start,
reload and stop), never because a process died or the amphora shut down, so a reboot brings back
exactly what the controller last asked for. Every change rewrites the file atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amphora_agent.fsutil import atomic_write

LOG = logging.getLogger(__name__)

DESIRED_STATE_FILE = "desired_state.json"
RUNNING = "running"
STOPPED = "stopped"


class DesiredState:
    """Reads and records the desired state; safe to use from concurrent request threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Requests on different load balancers hold different locks but share this file.
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any]:
        """The recorded state; a missing or unreadable file is an empty one."""
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"load_balancers": {}}
        except (OSError, ValueError) as exc:
            LOG.warning("%s is unreadable (%s); nothing will be restored from it", self.path, exc)
            return {"load_balancers": {}}
        if not isinstance(state, dict) or not isinstance(state.get("load_balancers"), dict):
            LOG.warning("%s is not a desired-state record; ignoring it", self.path)
            return {"load_balancers": {}}
        return state

    # --- recording (API handlers) -----------------------------------------------------------

    def set_load_balancer(self, lb_id: str, running: bool) -> None:
        with self._changing() as state:
            state["load_balancers"][lb_id] = RUNNING if running else STOPPED

    def forget_load_balancer(self, lb_id: str) -> None:
        with self._changing() as state:
            state["load_balancers"].pop(lb_id, None)

    def set_keepalived(self, running: bool) -> None:
        with self._changing() as state:
            state["keepalived"] = RUNNING if running else STOPPED

    # --- reading (restore at boot) ----------------------------------------------------------

    def running_load_balancers(self) -> list[str]:
        return sorted(lb_id for lb_id, wanted in self.load()["load_balancers"].items()
                      if wanted == RUNNING)

    def keepalived_running(self) -> bool:
        return self.load().get("keepalived") == RUNNING

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """The state to change in place; written back if the block changed it."""
        with self._lock:
            state = self.load()
            before = json.dumps(state, indent=1, sort_keys=True)
            yield state
            after = json.dumps(state, indent=1, sort_keys=True)
            if after != before:
                atomic_write(self.path, after.encode(), mode=0o644)
