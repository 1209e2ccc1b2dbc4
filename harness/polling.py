"""Bounded polling: every wait of the harness and its suites ends, in time and so in count.

tenacity serves where failures are exceptions to retry (harness.amphora_api.client,
harness.lab.lab); these two
serve the many waits for a condition to become true.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.05


def poll_until(condition: Callable[[], bool], timeout: float,
               interval: float = DEFAULT_INTERVAL_S) -> bool:
    """Evaluate condition every interval until it holds or timeout seconds passed; its last
    value (checked once more at the deadline, so a slow last sleep loses nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = DEFAULT_INTERVAL_S,
               error: type[Exception] = TimeoutError) -> None:
    """poll_until, raising error("<what> not within <timeout>s") when the time is up."""
    if not poll_until(condition, timeout, interval):
        raise error(f"{what} not within {timeout:.0f}s")
