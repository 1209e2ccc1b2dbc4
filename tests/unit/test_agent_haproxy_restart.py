"""The haproxy restarter's watch without haproxy: `sleep` children stand in for masters, a fake
supervisor for HaproxySupervisor. It starts a killed master again, watches the one it started,
and looks at nothing while nothing happens. (tests/agent/test_haproxy_supervision.py runs it
with a real agent and haproxy.)"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amphora_agent.haproxy import StartLimit
from amphora_agent.haproxy_restart import HaproxyRestarter
from harness.polling import poll_until

LB = "lb"
TIMEOUT_S = 10.0
# Far beyond each test: only exits and change hooks make the restarter look.
NO_RECHECK_S = 3600.0


class FakeSupervisor:
    """What the restarter asks of HaproxySupervisor. queries counts its looks at masters."""

    def __init__(self, directory: Path) -> None:
        self.change_hooks: list[Callable[[str], None]] = []
        self.start_limit = StartLimit()
        self.directory = directory
        self.masters: list[subprocess.Popen[bytes]] = []
        self.automatic_starts = 0
        self.queries = 0

    def exists(self, lb_id: str) -> bool:
        return True

    def pid_path(self, lb_id: str) -> Path:
        return self.directory / f"{lb_id}.pid"

    def master_pid(self, lb_id: str) -> int | None:
        self.queries += 1
        master = self.masters[-1] if self.masters else None
        return master.pid if master is not None and master.poll() is None else None

    def is_running(self, lb_id: str) -> bool:
        return self.master_pid(lb_id) is not None

    def start(self, lb_id: str, *, automatic: bool = False) -> None:
        self.start_limit.record_start(lb_id)
        self.masters.append(subprocess.Popen(["sleep", "600"]))
        self.pid_path(lb_id).write_text(f"{self.masters[-1].pid}\n")
        self.automatic_starts += automatic
        for hook in self.change_hooks:
            hook(lb_id)

    def kill_master(self) -> None:
        self.masters[-1].kill()


class FakeDesired:
    def running_load_balancers(self) -> list[str]:
        return [LB]


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[FakeSupervisor]:
    fake = FakeSupervisor(tmp_path)
    fake.start(LB)
    try:
        yield fake
    finally:
        for master in fake.masters:
            master.kill()
            master.wait()


@pytest.fixture
def restarter(supervisor: FakeSupervisor) -> Iterator[HaproxyRestarter]:
    restarter = HaproxyRestarter(supervisor, FakeDesired(),  # type: ignore[arg-type]
                                 lambda _lb_id: contextlib.nullcontext(),
                                 recheck=NO_RECHECK_S)
    restarter.start()
    try:
        yield restarter
    finally:
        restarter.stop()


def test_a_killed_master_is_started_again_and_so_is_the_one_started_for_it(
        supervisor: FakeSupervisor, restarter: HaproxyRestarter) -> None:
    for restarts in (1, 2):
        supervisor.kill_master()
        assert poll_until(lambda n=restarts: supervisor.automatic_starts == n, TIMEOUT_S)
        assert poll_until(lambda: supervisor.master_pid(LB) is not None, TIMEOUT_S)
    assert len(supervisor.masters) == 3


def test_nothing_is_looked_at_while_nothing_happens(
        supervisor: FakeSupervisor, restarter: HaproxyRestarter) -> None:
    def idle() -> bool:
        """No look for a while (a poll every 0.1 s would look three times)."""
        before = supervisor.queries
        time.sleep(0.3)
        return supervisor.queries == before > 0

    assert poll_until(idle, TIMEOUT_S)
    looks = supervisor.queries
    restarter.watch_changed()  # a start, reload or stop through the API
    assert poll_until(lambda: supervisor.queries > looks, TIMEOUT_S)


def test_nothing_is_started_after_stop(supervisor: FakeSupervisor,
                                       restarter: HaproxyRestarter) -> None:
    assert poll_until(lambda: supervisor.queries > 0, TIMEOUT_S)
    restarter.stop()
    supervisor.kill_master()
    time.sleep(0.5)  # five RestartSec
    assert supervisor.automatic_starts == 0
