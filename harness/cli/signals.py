"""How the command ends when it is told to: SIGTERM (what CI systems send to cancel) ends every
command through its finally blocks and the labs' teardown, as Ctrl-C does; a child the command
waits on (the pytest run of `run`) gets the signal passed on, and the command waits for it.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

FORWARDED = (signal.SIGINT, signal.SIGTERM)
# prctl(2): deliver this signal to the child when its parent dies (even by SIGKILL).
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class Terminated(SystemExit):
    """SIGTERM: unwinds like any exit (finally blocks, context managers, atexit)."""


def _terminate(signum: int, _frame) -> None:
    raise Terminated(128 + signum)


@contextmanager
def sigterm_exits_through_finally() -> Iterator[None]:
    """By default SIGTERM kills the process on the spot, leaving labs and children behind;
    inside this it raises Terminated instead."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class ChildExit:
    exit_code: int
    signal: int | None  # the signal this process received and passed on, if any

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signal).name if self.signal else None


def _child_setup() -> None:
    """In the child before exec: the signals a shell may have ignored for a background job
    (SIGINT) are its to handle again, and it is told when this process dies."""
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def run_forwarding_signals(argv: Sequence[str], cwd: Path) -> ChildExit:
    """Run argv and wait for it. SIGINT and SIGTERM sent to this process are passed on to the
    child (in its own process group, so a Ctrl-C on the terminal reaches it once, through us)
    and we keep waiting until it has finished its teardown."""
    received: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        for process in started:
            with suppress(ProcessLookupError):
                process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        process = subprocess.Popen(list(argv), cwd=cwd, process_group=0,
                                   preexec_fn=_child_setup)
        started.append(process)
        if received:  # signalled while the child was being started: it missed that
            process.send_signal(received[0])
        exit_code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return ChildExit(exit_code, received[0] if received else None)
