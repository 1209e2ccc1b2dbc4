"""What the command shows and where it writes: progress on stderr, results on stdout, files
under the results directory (./results, or --results-dir), and the error whose message the user
sees as is."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from harness.paths import default_results_dir

CONSOLE = Console(stderr=True, log_path=False)
# Results tables: in a CI log (no terminal) rich would assume 80 columns and fold every cell.
OUT = Console(width=None if sys.stdout.isatty() else 140)
# Read as console.RESULTS_DIR, at the time of use: one place to point elsewhere (--results-dir
# and tests do).
RESULTS_DIR = default_results_dir()


class CommandError(Exception):
    """A command failed; its message is printed as is."""


@contextmanager
def step(text: str) -> Iterator[None]:
    """A long step: a spinner while it runs, its duration when it is done."""
    started = time.monotonic()
    with CONSOLE.status(text):
        yield
    CONSOLE.print(f"[green]✓[/] {text} [dim]({time.monotonic() - started:.1f}s)[/]")
