"""Starting again a haproxy that died, as systemd does for Octavia's haproxy units.

Octavia runs each load balancer's haproxy under a unit with Restart=always and systemd's
defaults otherwise: RestartSec=100ms, and the start rate limit of 5 starts per 10 s
(DefaultStartLimitBurst, DefaultStartLimitIntervalSec). A `kill -9` of the master therefore
brings a new haproxy on the same config about 100 ms later, and the amphora keeps serving; a
haproxy that keeps dying is started 5 times (the first start included) and then left failed.

Here one thread does that for every load balancer, and sleeps while nothing happens: it holds a
pidfd (os.pidfd_open; the masters are daemonized, not the agent's children, so waitpid cannot
see them) of the master of every load balancer the controller last wanted running
(desired_state.json: started or reloaded, not stopped or deleted, through the API), and polls
those pidfds and an eventfd. The eventfd is written after every start, reload and stop of a
load balancer (HaproxySupervisor.change_hooks: the master or the controller's wish for it may
have changed), and then the thread reads the pid files again and watches the masters they name.

RESTART_SEC (systemd's RestartSec) after a master exits, the thread looks at its load balancer:
if the controller still wants it running, it has a config but no live master, and it either
left a pid file (the master died: a clean stop through the API removes it) or failed an earlier
automatic start, then under the load balancer's lock, so that no API request on it is in flight,
it checks that again and starts it (HaproxySupervisor.start with automatic=True). A failed
automatic start is tried again RESTART_SEC later. The start limit (haproxy.StartLimit) counts
every start; when it is hit the load balancer stays down (ERROR, its pid file left) and is not
tried again until a start, reload, stop or delete through the API, or the agent's next start
(which starts what should run, as a reboot of a VM amphora would).

Every RECHECK_S the thread reads the pid files anyway, for what no pidfd and no change hook
shows: a master that had already exited when its pidfd was to be opened (treated as having
died then), or one replaced behind the agent's back.

A start through the API that fails is answered 500 and not retried here (no pid file was left);
systemd would retry it like a crash.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from amphora_agent.desired_state import DesiredState
from amphora_agent.haproxy import HaproxyError, HaproxySupervisor

LOG = logging.getLogger(__name__)

# systemd's default RestartSec: how long after a master's exit it is started again.
RESTART_SEC = 0.1
# The safety net's period; every exit the pidfds see is acted on RESTART_SEC after it.
RECHECK_S = 5.0


class HaproxyRestarter:
    def __init__(self, haproxy: HaproxySupervisor, desired: DesiredState,
                 hold: Callable[[str], AbstractContextManager[None]],
                 restart_sec: float = RESTART_SEC, recheck: float = RECHECK_S) -> None:
        self._haproxy = haproxy
        self._desired = desired
        self._hold = hold  # the API's per-load-balancer lock
        self._restart_sec = restart_sec
        self._recheck = recheck
        self._stopping = threading.Event()
        # Never closed: a change hook may write to it until the process ends.
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake, select.POLLIN)
        # Only the thread touches these.
        self._watched: dict[str, tuple[int, int]] = {}  # lb id -> (master pid, its pidfd)
        self._lb_of_fd: dict[int, str] = {}
        self._due: dict[str, float] = {}  # lb id -> when to look at it (time.monotonic)
        # Load balancers whose last automatic start failed (no pid file tells any more).
        self._retrying: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="haproxy-restart", daemon=True)
        haproxy.change_hooks.append(self.watch_changed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No restart begins after this returns (one in progress finishes)."""
        self._stopping.set()
        self.watch_changed()

    def watch_changed(self, _lb_id: str = "") -> None:
        """Wake the thread to read the pid files again (from any thread; never blocks)."""
        os.eventfd_write(self._wake, 1)

    def _run(self) -> None:
        recheck_at = 0.0  # the first pass reads every pid file
        while not self._stopping.is_set():
            try:
                recheck_at = self._step(recheck_at)
            except Exception:  # the thread must outlive whatever one pass meets
                LOG.exception("haproxy restart check failed")
                self._stopping.wait(self._restart_sec)  # and must not spin on it
        for lb_id in list(self._watched):
            self._unwatch(lb_id)

    def _step(self, recheck_at: float) -> float:
        """Sleep until a master exits, a change is announced, a restart is due or the safety
        net's time comes; act on it. Returns when the safety net is next due."""
        timeout = min([recheck_at, *self._due.values()]) - time.monotonic()
        events = self._poller.poll(max(timeout, 0.0) * 1000)
        now = time.monotonic()
        for fd, _ in events:
            if fd == self._wake:
                os.eventfd_read(self._wake)
                recheck_at = now
            elif (lb_id := self._lb_of_fd.get(fd)) is not None:
                self._unwatch(lb_id)
                self._due.setdefault(lb_id, now + self._restart_sec)
        if now >= recheck_at:
            self._rescan(now)
            recheck_at = now + self._recheck
        for lb_id in [lb_id for lb_id, at in self._due.items() if at <= now]:
            del self._due[lb_id]
            # An exit that a stop or delete through the API caused shows in the desired state
            # (recorded before the action): that request's lock is not waited for.
            if self._should_restart(lb_id):
                with self._hold(lb_id):
                    self._restart(lb_id)
        return recheck_at

    def _rescan(self, now: float) -> None:
        """Watch the master of every load balancer that should run; one found dead without
        its exit seen is due RESTART_SEC from now."""
        wanted = set(self._desired.running_load_balancers())
        for lb_id in set(self._watched) - wanted:
            self._unwatch(lb_id)
        for lb_id in sorted(wanted):
            pid = self._haproxy.master_pid(lb_id)
            if pid is not None and self._watch(lb_id, pid):
                continue
            self._unwatch(lb_id)
            if self._died(lb_id):
                self._due.setdefault(lb_id, now + self._restart_sec)

    def _watch(self, lb_id: str, pid: int) -> bool:
        """Hold a pidfd of lb_id's master pid; False if that process is gone already."""
        if self._watched.get(lb_id, (None,))[0] == pid:
            return True
        self._unwatch(lb_id)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        # The pid was read before the pidfd was opened: if it was reused in between, the pidfd
        # names a stranger. Read after the open, a pid still naming the master proves it is not.
        if self._haproxy.master_pid(lb_id) != pid:
            os.close(pidfd)
            return False
        self._watched[lb_id] = (pid, pidfd)
        self._lb_of_fd[pidfd] = lb_id
        self._poller.register(pidfd, select.POLLIN)
        return True

    def _unwatch(self, lb_id: str) -> None:
        _, pidfd = self._watched.pop(lb_id, (None, None))
        if pidfd is not None:
            self._poller.unregister(pidfd)
            del self._lb_of_fd[pidfd]
            os.close(pidfd)

    def _died(self, lb_id: str) -> bool:
        haproxy = self._haproxy
        if not haproxy.exists(lb_id) or haproxy.is_running(lb_id):
            self._retrying.discard(lb_id)
            return False
        if haproxy.start_limit.failed(lb_id):
            return False
        return lb_id in self._retrying or haproxy.pid_path(lb_id).exists()

    def _should_restart(self, lb_id: str) -> bool:
        return (not self._stopping.is_set() and lb_id in self._desired.running_load_balancers()
                and self._died(lb_id))

    def _restart(self, lb_id: str) -> None:
        """Under the load balancer's lock: what an API request changed meanwhile wins."""
        haproxy = self._haproxy
        if not self._should_restart(lb_id):
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
            self._due[lb_id] = time.monotonic() + self._restart_sec
            return
        self._retrying.discard(lb_id)
        LOG.info("haproxy of load balancer %s started again, master pid %s", lb_id,
                 haproxy.master_pid(lb_id))
