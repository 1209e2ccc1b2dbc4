"""Starting again a haproxy that died, as systemd does for Octavia's haproxy units.

Octavia runs each load balancer's haproxy under a unit with Restart=always and systemd's
defaults otherwise: RestartSec=100ms, and the start rate limit of 5 starts per 10 s
(DefaultStartLimitBurst, DefaultStartLimitIntervalSec). A `kill -9` of the master therefore
brings a new haproxy on the same config about 100 ms later, and the amphora keeps serving; a
haproxy that keeps dying is started 5 times (the first start included) and then left failed.

Here one thread does that for every load balancer. Every 0.1 s (RESTART_POLL_S, the
counterpart of RestartSec) it looks for load balancers the controller last wanted running
(desired_state.json: started or reloaded, not stopped or deleted, through the API) that have a
config but no live master, and that either left a pid file (the master died: a clean stop
through the API removes it) or failed an earlier automatic start. Under the load balancer's
lock, so that no API request on it is in flight, it checks again and starts it
(HaproxySupervisor.start with automatic=True). The start limit (haproxy.StartLimit) counts
every start; when it is hit the load balancer stays down (ERROR, its pid file left) and is not
tried again until a start, reload, stop or delete through the API, or the agent's next start
(which starts what should run, as a reboot of a VM amphora would).

A start through the API that fails is answered 500 and not retried here (no pid file was left);
systemd would retry it like a crash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from amphora_agent.desired_state import DesiredState
from amphora_agent.haproxy import HaproxyError, HaproxySupervisor

LOG = logging.getLogger(__name__)

RESTART_POLL_S = 0.1


class HaproxyRestarter:
    def __init__(self, haproxy: HaproxySupervisor, desired: DesiredState,
                 hold: Callable[[str], AbstractContextManager[None]],
                 poll: float = RESTART_POLL_S) -> None:
        self._haproxy = haproxy
        self._desired = desired
        self._hold = hold  # the API's per-load-balancer lock
        self._poll = poll
        self._stopping = threading.Event()
        # Load balancers whose last automatic start failed (no pid file tells any more).
        self._retrying: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="haproxy-restart", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No restart begins after this returns (one in progress finishes)."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(self._poll):
            try:
                self.tick()
            except Exception:  # the thread must outlive whatever one tick meets
                LOG.exception("haproxy restart check failed")

    def tick(self) -> None:
        """One look at every load balancer; restarts what died."""
        for lb_id in self._desired.running_load_balancers():
            if self._stopping.is_set():
                return
            if self._died(lb_id):
                with self._hold(lb_id):
                    self._restart(lb_id)

    def _died(self, lb_id: str) -> bool:
        haproxy = self._haproxy
        if not haproxy.exists(lb_id) or haproxy.is_running(lb_id):
            self._retrying.discard(lb_id)
            return False
        if haproxy.start_limit.failed(lb_id):
            return False
        return lb_id in self._retrying or haproxy.pid_path(lb_id).exists()

    def _restart(self, lb_id: str) -> None:
        """Under the load balancer's lock: what an API request changed meanwhile wins."""
        haproxy = self._haproxy
        if (self._stopping.is_set() or lb_id not in self._desired.running_load_balancers()
                or not self._died(lb_id)):
            self._retrying.discard(lb_id)
            return
        if not haproxy.start_limit.allow_restart(lb_id):
            self._retrying.discard(lb_id)
            LOG.error("haproxy of load balancer %s: start request repeated too quickly "
                      "(%d starts within %.0f s); it stays down until it is started through "
                      "the API", lb_id, haproxy.start_limit.burst, haproxy.start_limit.interval)
            return
        LOG.warning("haproxy of load balancer %s exited unexpectedly; starting it again", lb_id)
        try:
            haproxy.start(lb_id, automatic=True)
        except HaproxyError as exc:
            LOG.error("haproxy of load balancer %s did not start again: %s", lb_id, exc.output)
            self._retrying.add(lb_id)
            return
        self._retrying.discard(lb_id)
        LOG.info("haproxy of load balancer %s started again, master pid %s", lb_id,
                 haproxy.master_pid(lb_id))
