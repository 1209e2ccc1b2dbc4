"""Recorded request loops: who answered, through which amphora, when, and how long it took.

A TimelineRecorder sends one request every `interval` seconds (a fixed rate, not one after the
other: a request that hangs during a failover must not delay the next ones) on a fresh connection
each time, so that each sample shows the path a new client would take at that instant. The
timeline then yields what a client saw: outage windows (runs of failed requests), down time (no
answer arriving at all), and which amphora carried each answer.

A request not answered within `timeout` counts as failed. The default, 0.8 s, is below TCP's
initial SYN retransmission time (1 s): a request only succeeds on its first SYN, so a success
says the path worked when the request was sent, not a second later after a retransmission.

Recorders in use are known (recorders_active_since), so a failure bundle (harness.observe.bundle)
can keep the traffic of the test that failed.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.observe.vip import ask
from harness.polling import poll_until

DEFAULT_TIMEOUT_S = 0.8
# Every recorder started in this process that is still referenced somewhere.
_STARTED: weakref.WeakSet[TimelineRecorder] = weakref.WeakSet()


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


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    interval: float = 0.02

    def ordered(self, since: float = 0.0) -> list[Sample]:
        return sorted((s for s in self.samples if s.sent_at >= since), key=lambda s: s.sent_at)

    def event(self, label: str) -> float:
        """When the (first) event with this label happened."""
        for event in self.events:
            if event.label == label:
                return event.at
        raise KeyError(f"no event {label!r} in the timeline")

    def outages(self, since: float = 0.0) -> list[Outage]:
        """Runs of failed requests sent at or after `since`, each closed by the next success.

        A run still open when recording stopped ends one interval after its last sample."""
        windows: list[Outage] = []
        start: float | None = None
        failed = 0
        ordered = self.ordered(since)
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

    def outage_since(self, since: float) -> Outage | None:
        """Everything a fault at about `since` cost: from the first failed request sent after
        it to the success that ended the last outage after it. Outages separated by brief
        recoveries count as one, so a relapse is never left out."""
        windows = self.outages(since)
        if not windows:
            return None
        return Outage(windows[0].start, windows[-1].end, sum(w.failed for w in windows))

    def downtime(self, since: float = 0.0) -> float:
        """The down time after `since` (a fault): the longest stretch of time, from `since` to
        the end of the recording, in which no answer arrived. This is the one measure of down
        time: the bench's failover_downtime_s and the failover suite's downtime_s are it.

        An answer is a successful sample; it arrives at its send time plus its latency. The
        stretches are: from `since` to the first arrival at or after it, between consecutive
        arrivals, and from the last arrival to the end of the recording (one interval after
        the last send, or the last arrival if later). Failed requests and held ones (queued,
        answered late, e.g. while the client resolves the VIP's address again) both leave such
        a stretch, so both count, unlike in outages(); with nothing wrong the down time is about
        one interval. 0 for an empty timeline, or one that ended before `since`."""
        ordered = self.ordered()
        if not ordered:
            return 0.0
        arrivals = sorted(a for a in (s.sent_at + s.latency_ms / 1000 for s in ordered if s.ok)
                          if a >= since)
        end = max([since, ordered[-1].sent_at + self.interval, *arrivals])
        points = [since, *arrivals, end]
        return max(later - earlier for earlier, later in itertools.pairwise(points))

    def longest_outage(self, since: float = 0.0) -> float:
        return max((o.duration for o in self.outages(since)), default=0.0)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if not s.ok and since <= s.sent_at < until]

    def answered_by(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """How many successful requests each amphora carried, of those sent in [since, until)."""
        counts: dict[str, int] = {}
        for s in self.samples:
            if s.ok and since <= s.sent_at < until and s.amphora:
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
        timeout: float = DEFAULT_TIMEOUT_S,
        max_duration: float = 180.0,
        verify: bool | str = False,
        carriers: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        """carriers: the current member-network address -> amphora map (observe.vip), to
        name the amphora of each answer from what the member saw instead of a header."""
        self.url = url
        self.carriers = carriers
        self.interval = interval
        self.timeout = timeout
        self.max_duration = max_duration
        self.verify = verify
        self._timeline = Timeline(interval=interval)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Enough workers that requests hanging for `timeout` never delay the schedule.
        self._pool = ThreadPoolExecutor(max_workers=int(timeout / interval) + 8)
        self._thread = threading.Thread(target=self._schedule, name="timeline", daemon=True)
        self._t0 = 0.0
        self.stopped_at: float | None = None  # time.monotonic()

    def __enter__(self) -> TimelineRecorder:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()
        _STARTED.add(self)

    def now(self) -> float:
        """Seconds since the recorder started, on the timeline's clock."""
        return time.monotonic() - self._t0

    def mark(self, label: str) -> None:
        """Record an event (fault, heal, push) at the current instant."""
        with self._lock:
            self._timeline.events.append(Event(self.now(), label))

    def wait_until(self, predicate: Callable[[Timeline], bool], timeout: float) -> bool:
        """Wait (bounded) until predicate holds on a snapshot of the timeline."""
        return poll_until(lambda: predicate(self.snapshot()), timeout, self.interval)

    def snapshot(self) -> Timeline:
        with self._lock:
            return Timeline(
                list(self._timeline.samples), list(self._timeline.events), self.interval
            )

    def stop(self) -> Timeline:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
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
            self._pool.submit(self._one)
            # After a stall (a starved process) go on from now instead of sending a burst.
            tick = max(tick + 1, int((time.monotonic() - self._t0) / self.interval))

    def _one(self) -> None:
        begin = time.monotonic()
        answer = ask(self.url, timeout=self.timeout, verify=self.verify,
                     carriers=self.carriers() if self.carriers else None)
        sample = Sample(
            sent_at=begin - self._t0,
            ok=answer.served,
            latency_ms=(time.monotonic() - begin) * 1000,
            status=answer.status,
            member=answer.member,
            amphora=answer.amphora,
            error=answer.error,
        )
        with self._lock:
            self._timeline.samples.append(sample)


def recorders_active_since(instant: float) -> list[TimelineRecorder]:
    """Recorders (still referenced) that were recording at or after instant (time.monotonic()),
    oldest first."""
    active = [r for r in _STARTED if r.stopped_at is None or r.stopped_at >= instant]
    return sorted(active, key=lambda r: r._t0)
