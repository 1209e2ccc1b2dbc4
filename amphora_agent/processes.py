"""Process helpers shared by the haproxy and keepalived supervisors.

The daemons the agent starts are not its children once they have daemonized (and they must
outlive an agent restart), so liveness is judged from their status: a zombie nobody reaps yet
counts as dead, where psutil's wait_procs would wait out its whole timeout on it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable

import psutil

POLL_S = 0.02


def is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [process for process in processes if is_alive(process)]


def wait_for(condition: Callable[[], bool], timeout: float, poll: float = POLL_S) -> bool:
    """Poll condition until it holds or timeout seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def run_command(
    argv: list[str], timeout: float, error: type[Exception], *, new_session: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv with stdout and stderr merged; failing to run it at all raises `error`.
    env replaces the environment (None: the agent's)."""
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", timeout=timeout, start_new_session=new_session,
            check=False, env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{argv[0]} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise error(f"cannot run {argv[0]}: {exc.strerror}") from exc


def terminate_tree(main: psutil.Process, timeout: float) -> list[int]:
    """SIGTERM main (it stops its own children), then SIGKILL whatever of it and its children
    outlives timeout. Returns the pids still alive after that (empty when everything exited)."""
    try:
        processes = [main, *main.children()]
        main.terminate()
    except psutil.NoSuchProcess:
        return []
    return _kill_survivors(processes, timeout)


def terminate_all(processes: list[psutil.Process], timeout: float) -> list[int]:
    """SIGTERM every process, then SIGKILL whatever outlives timeout.
    Returns the pids still alive after that (empty when everything exited)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
            # A stopped process would hold SIGTERM pending until continued.
            process.resume()
    return _kill_survivors(processes, timeout)


def _kill_survivors(processes: list[psutil.Process], timeout: float) -> list[int]:
    if wait_for(lambda: not alive(processes), timeout):
        return []
    for process in alive(processes):
        with contextlib.suppress(psutil.Error):
            process.kill()
    wait_for(lambda: not alive(processes), timeout)
    return [process.pid for process in alive(processes)]
