"""What the packaging tests share: running a program the way a user's shell would, and checking
that nothing of a lab is left on this host."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path

from harness.lab.cleanup import OWNER_FILE, WORKDIR_PREFIX
from harness.lab.providers import labs_on_host
from harness.lab.providers.base import Provider


def default_signal_dispositions() -> None:
    """In a child before exec: a shell running this suite as a background job ignores SIGINT;
    the programs under test must see the signals a terminal or a CI system would send."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def start(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen:
    """A program started as from a shell (its output to log, or discarded)."""
    output = log.open("w") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                            stderr=subprocess.STDOUT, preexec_fn=default_signal_dispositions)


def lab_ids(provider: Provider) -> set[str]:
    return {lab.lab_id for lab in labs_on_host(provider)}


def workdirs(lab_id: str | None = None) -> list[Path]:
    """Lab work directories in /tmp (of one lab, or of any)."""
    prefix = f"{WORKDIR_PREFIX}{lab_id}-" if lab_id else WORKDIR_PREFIX
    return [p for p in Path(tempfile.gettempdir()).glob(f"{prefix}*")
            if (p / OWNER_FILE).is_file()]


def stop(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Whatever a test left running: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
