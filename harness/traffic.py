"""Recorded request loops: who answered, through which amphora, when, and how long it took.

A TimelineRecorder sends one request every `interval` seconds (a fixed rate, not one after the
other: a request that hangs during a failover must not delay the next ones) on a fresh connection
each time, so that each sample shows the path a new client would take at that instant. The
timeline then yields the outage windows a client saw.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

MEMBER_HEADER = "X-Member-Id"
AMPHORA_HEADER = "X-Amphora-Id"


@dataclass(frozen=True)
class Sample:
    sent_at: float  # seconds since the recorder started
    ok: bool
    latency_ms: float
    status: int | None = None
    member: str | None = None
    amphora: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Outage:
    start: float  # send time of the first failed request
    end: float  # send time of the first successful request after it
    failed: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Event:
    """Something the test did at a moment of the timeline (a fault, a heal)."""

    at: float
    label: str


def identify_by_headers(response: requests.Response) -> tuple[str | None, str | None]:
    """The member and amphora that carried a response, from the headers they add."""
    return response.headers.get(MEMBER_HEADER), response.headers.get(AMPHORA_HEADER)


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    interval: float = 0.02

    def ordered(self) -> list[Sample]:
        return sorted(self.samples, key=lambda s: s.sent_at)

    def outages(self) -> list[Outage]:
        """Runs of failed requests, each closed by the next success.

        A run still open when recording stopped ends at the last sample's send time."""
        windows: list[Outage] = []
        start: float | None = None
        failed = 0
        ordered = self.ordered()
        for sample in ordered:
            if not sample.ok:
                if start is None:
                    start, failed = sample.sent_at, 0
                failed += 1
            elif start is not None:
                windows.append(Outage(start, sample.sent_at, failed))
                start = None
        if start is not None:
            windows.append(Outage(start, ordered[-1].sent_at + self.interval, failed))
        return windows

    def longest_outage(self) -> float:
        return max((o.duration for o in self.outages()), default=0.0)

    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def answered_by(self, since: float = 0.0) -> dict[str, int]:
        """How many successful requests each amphora carried after `since`."""
        counts: dict[str, int] = {}
        for s in self.samples:
            if s.ok and s.sent_at >= since and s.amphora:
                counts[s.amphora] = counts.get(s.amphora, 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {
            "interval_s": self.interval,
            "samples": [asdict(s) for s in self.ordered()],
            "events": [asdict(e) for e in self.events],
            "outages": [asdict(o) | {"duration": o.duration} for o in self.outages()],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))


class TimelineRecorder:
    """Sends requests at a fixed rate in the background until stopped (or its bounds are hit)."""

    def __init__(
        self,
        url: str,
        *,
        interval: float = 0.02,
        timeout: float = 1.0,
        max_duration: float = 180.0,
        identify: Callable[
            [requests.Response], tuple[str | None, str | None]
        ] = identify_by_headers,
        verify: bool | str = False,
    ) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.max_duration = max_duration
        self.identify = identify
        self.verify = verify
        self._timeline = Timeline(interval=interval)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Enough workers that requests hanging for `timeout` never delay the schedule.
        self._pool = ThreadPoolExecutor(max_workers=int(timeout / interval) + 8)
        self._thread = threading.Thread(target=self._schedule, name="timeline", daemon=True)
        self._t0 = 0.0

    def __enter__(self) -> TimelineRecorder:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def now(self) -> float:
        """Seconds since the recorder started, on the timeline's clock."""
        return time.monotonic() - self._t0

    def mark(self, label: str) -> None:
        """Record an event (fault, heal, push) at the current instant."""
        with self._lock:
            self._timeline.events.append(Event(self.now(), label))

    def wait_until(self, predicate: Callable[[Timeline], bool], timeout: float) -> bool:
        """Wait (bounded) until predicate holds on a snapshot of the timeline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(self.interval)
        return predicate(self.snapshot())

    def snapshot(self) -> Timeline:
        with self._lock:
            return Timeline(
                list(self._timeline.samples), list(self._timeline.events), self.interval
            )

    def stop(self) -> Timeline:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.max_duration)
        self._pool.shutdown(wait=True)
        return self.snapshot()

    def _schedule(self) -> None:
        tick = 0
        while not self._stop.is_set():
            due = self._t0 + tick * self.interval
            if due - self._t0 > self.max_duration:
                break
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._pool.submit(self._one, due - self._t0)
            tick += 1

    def _one(self, sent_at: float) -> None:
        begin = time.monotonic()
        try:
            response = requests.get(
                self.url,
                timeout=self.timeout,
                verify=self.verify,
                headers={"Connection": "close"},
            )
            member, amphora = self.identify(response)
            sample = Sample(
                sent_at=sent_at,
                ok=response.status_code < 500,
                latency_ms=(time.monotonic() - begin) * 1000,
                status=response.status_code,
                member=member,
                amphora=amphora,
            )
        except requests.RequestException as exc:
            sample = Sample(
                sent_at=sent_at,
                ok=False,
                latency_ms=(time.monotonic() - begin) * 1000,
                error=type(exc).__name__,
            )
        with self._lock:
            self._timeline.samples.append(sample)
