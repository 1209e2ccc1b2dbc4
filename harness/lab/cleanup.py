"""Nothing a lab makes outlives it: live labs are torn down at interpreter exit and on SIGTERM,
and gc removes what a killed process left (engine objects, work directories, host tables).

Engine objects carry the owning process (see harness.lab.providers.base), so gc tells the
leftovers of dead runs from labs a live process still uses. A lab's work directory
(/tmp/amphora-harness-<lab id>-*: its PKI, private keys included) carries its owner too, in a
file: a process killed before its lab had any engine object leaves only that directory, and gc
still finds it.
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
from harness.lab.providers.base import Provider, owner_alive, owner_token

WORKDIR_PREFIX = "amphora-harness-"
OWNER_FILE = "owner"


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
    return f"{WORKDIR_PREFIX}{lab_id}-"


def make_workdir(lab_id: str) -> Path:
    """A new work directory for the lab, owned by this process."""
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix(lab_id)))
    (workdir / OWNER_FILE).write_text(owner_token())
    return workdir


def remove_workdirs(lab_id: str) -> None:
    """Remove the lab's work directories (a lab `down` or gc removes, or a kept one)."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{workdir_prefix(lab_id)}*"):
        shutil.rmtree(workdir, ignore_errors=True)


def orphaned_workdirs(existing_labs: frozenset[str], *, everything: bool = False) -> list[Path]:
    """Work directories of labs that have nothing left in any engine and whose owner process is
    gone (with everything: whatever their owner)."""
    orphans = []
    for workdir in sorted(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*")):
        owner = workdir / OWNER_FILE
        if not owner.is_file():  # not a lab's (image builds use the prefix too)
            continue
        lab_id = workdir.name.removeprefix(WORKDIR_PREFIX).rpartition("-")[0]
        if lab_id in existing_labs:
            continue
        if everything or not owner_alive(owner.read_text().strip()):
            orphans.append(workdir)
    return orphans


def collect_leftovers(provider: Provider, *, include_kept: bool = True,
                      everything: bool = False) -> list[str]:
    """Remove labs whose owner process is gone (see Provider.gc) and their work directories
    (PKI), work directories of dead runs whose lab never got further, and the fault tables of
    labs that are gone; returns the lab ids removed."""
    removed = provider.gc(include_kept=include_kept, everything=everything)
    for lab_id in removed:
        remove_workdirs(lab_id)
    existing = frozenset(lab.lab_id for lab in labs_on_host(provider))
    for workdir in orphaned_workdirs(existing, everything=everything):
        shutil.rmtree(workdir, ignore_errors=True)
    # Host tables (link faults) of every lab that no longer exists, under any provider. (An
    # engine elsewhere holds its labs' tables on its own host: its teardown above took them.)
    remove_lab_tables(keep=existing)
    return removed
