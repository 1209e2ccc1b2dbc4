"""Nothing a lab makes outlives it: live labs are torn down at interpreter exit and on SIGTERM,
and gc removes what a killed process left (engine objects, work directories, host tables).

Engine objects carry the owning process (see harness.lab.providers.base), so gc tells the
leftovers of dead runs from labs a live process still uses.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Protocol

from harness.lab.host_tables import remove_lab_tables
from harness.lab.providers import labs_on_host
from harness.lab.providers.base import Provider


class LiveLab(Protocol):
    """A lab that is up; down() takes it down (safe to call twice)."""

    def down(self) -> None: ...


_LIVE_LABS: set[LiveLab] = set()


def track(lab: LiveLab) -> None:
    """Tear lab down when the process exits, unless it was taken down before (forget)."""
    _install_exit_hooks()
    _LIVE_LABS.add(lab)


def forget(lab: LiveLab) -> None:
    _LIVE_LABS.discard(lab)


def _down_live_labs() -> None:
    for lab in list(_LIVE_LABS):
        with contextlib.suppress(Exception):
            lab.down()


def _exit_on_sigterm(signum: int, _frame) -> None:
    # SystemExit unwinds every finally block and fixture finalizer, then atexit runs.
    raise SystemExit(128 + signum)


def _install_exit_hooks() -> None:
    """Tear live labs down on interpreter exit, and make SIGTERM exit through the finally
    blocks (by default it kills the process on the spot). SIGINT already raises
    KeyboardInterrupt. A handler someone else installed is left alone."""
    if getattr(_install_exit_hooks, "done", False):
        return
    atexit.register(_down_live_labs)
    with contextlib.suppress(ValueError):  # not the main thread: no signal handlers there
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _install_exit_hooks.done = True


def workdir_prefix(lab_id: str) -> str:
    """How the temporary work directory (PKI) of a lab is named, so gc finds it."""
    return f"amphora-harness-{lab_id}-"


def collect_leftovers(provider: Provider, *, include_kept: bool = True,
                      everything: bool = False) -> list[str]:
    """Remove labs whose owner process is gone (see Provider.gc) and their work directories
    (PKI), and the fault tables of labs that are gone; returns the lab ids removed."""
    removed = provider.gc(include_kept=include_kept, everything=everything)
    for lab_id in removed:
        for workdir in Path(tempfile.gettempdir()).glob(f"{workdir_prefix(lab_id)}*"):
            shutil.rmtree(workdir, ignore_errors=True)
    # Host tables (link faults) of every lab that no longer exists, under any provider.
    remove_lab_tables(keep=frozenset(lab.lab_id for lab in labs_on_host(provider)))
    return removed
