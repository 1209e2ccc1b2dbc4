"""Bounded polling: every wait of the harness and its suites ends, in time and so in count.

tenacity serves where failures are exceptions to retry (harness.amphora_api.client,
harness.lab.lab); these two serve the many waits for a condition to become true.

Slow runners: every lab wait is scaled by the timeout factor (`--timeout-factor` of the command
and of the pytest plugin, kept in $AMPHORA_HARNESS_TIMEOUT_FACTOR so child processes, such as
the pytest runs of `amphora-harness run`, scale theirs too). poll_until applies it; waits that
take their limit elsewhere (tenacity, subprocess timeouts) pass it through scaled().
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.05
TIMEOUT_FACTOR_ENV = "AMPHORA_HARNESS_TIMEOUT_FACTOR"


def parse_timeout_factor(text: str) -> float:
    """A factor as given on a command line or in the environment: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"timeout factor {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"timeout factor {text!r} must be a positive number (2 = twice as long)")
    return value


def timeout_factor() -> float:
    text = os.environ.get(TIMEOUT_FACTOR_ENV)
    return parse_timeout_factor(text) if text else 1.0


def set_timeout_factor(factor: float) -> None:
    """Scale every later wait of this process and of the processes it starts."""
    os.environ[TIMEOUT_FACTOR_ENV] = repr(parse_timeout_factor(str(factor)))


def scaled(seconds: float) -> float:
    """A wait's limit on this runner: seconds times the timeout factor."""
    return seconds * timeout_factor()


def poll_until(condition: Callable[[], bool], timeout: float,
               interval: float = DEFAULT_INTERVAL_S) -> bool:
    """Evaluate condition every interval until it holds or timeout seconds (scaled by the
    timeout factor) passed; its last value (checked once more at the deadline, so a slow last
    sleep loses nothing)."""
    deadline = time.monotonic() + scaled(timeout)
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
        raise error(f"{what} not within {scaled(timeout):.0f}s")
