"""The log of refused connections, which a flood of them cannot flood.

Any client that can reach the port can make the agent refuse a connection, as often as it
likes (one line each once made 110 MB in 40 s). So the first refusal of a window is logged in
full, the others of that window are only counted by reason, and one line sums them up when the
window is over: at most two lines per WINDOW_S, and every refusal is accounted for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

LOG = logging.getLogger(__name__)

WINDOW_S = 10.0


class RefusalLog:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._suppressed: Counter[str] = Counter()
        self._last_peer = ""

    def refused(self, peer: str, reason: str, details: str) -> None:
        """A connection from peer was refused for reason (a short kind, counted) with details
        (logged when this refusal opens a window)."""
        with self._lock:
            now = time.monotonic()
            self._summarize_if_over(now)
            if self._window_start is None:
                self._window_start = now
                LOG.info("refused a connection from %s: %s: %s", peer, reason, details)
            else:
                self._suppressed[reason] += 1
                self._last_peer = peer

    def flush(self) -> None:
        """Write the summary of a window that is over (the server calls this regularly, so a
        flood that stopped is still reported)."""
        with self._lock:
            self._summarize_if_over(time.monotonic())

    def _summarize_if_over(self, now: float) -> None:
        if self._window_start is None or now - self._window_start < self._window_s:
            return
        if self._suppressed:
            reasons = ", ".join(f"{reason}: {count}"
                                for reason, count in self._suppressed.most_common())
            LOG.warning("refused %d more connections in %.0f s (%s); the last from %s",
                        self._suppressed.total(), now - self._window_start, reasons,
                        self._last_peer)
        self._window_start = None
        self._suppressed.clear()
