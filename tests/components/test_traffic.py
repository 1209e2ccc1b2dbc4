"""The timeline recorder and the VIP probe against a real HTTP server on loopback that we take
down and up, and the timeline's arithmetic: outages and the one down-time measure."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.observe.plots import plot_timeline
from harness.observe.traffic import Sample, Timeline, TimelineRecorder
from harness.observe.vip import AMPHORA_HEADER, MEMBER_HEADER, answering_amphora


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header(MEMBER_HEADER, "m1")
        self.send_header(AMPHORA_HEADER, self.server.amphora_name)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class Backend:
    """An HTTP server on a fixed loopback port that can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None

    def up(self, name: str) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.amphora_name = name  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.down()


def test_outage_window_spans_the_downtime(backend: Backend, tmp_path):
    backend.up("amp-a")
    with TimelineRecorder(
        f"http://127.0.0.1:{backend.port}/", interval=0.02, timeout=0.5, max_duration=20
    ) as recorder:
        assert recorder.wait_until(lambda t: len(t.samples) >= 10, timeout=5)
        recorder.mark("down")
        backend.down()
        time.sleep(0.5)
        backend.up("amp-b")
        recorder.mark("up")
        assert recorder.wait_until(lambda t: t.answered_by().get("amp-b", 0) >= 10, timeout=5)
    timeline = recorder.stop()
    outages = timeline.outages()
    assert len(outages) == 1
    assert 0.3 <= outages[0].duration <= 2.0
    assert outages[0].failed >= 5
    assert set(timeline.answered_by()) == {"amp-a", "amp-b"}
    assert {s.member for s in timeline.samples if s.ok} == {"m1"}
    timeline.write_json(tmp_path / "timeline.json")
    png = plot_timeline(timeline, tmp_path / "timeline.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outage_arithmetic():
    def s(t: float, ok: bool) -> Sample:
        return Sample(sent_at=t, ok=ok, latency_ms=1.0)

    timeline = Timeline(
        [s(0, True), s(1, False), s(2, False), s(3, True), s(4, False)], interval=1.0
    )
    assert [(o.start, o.end, o.failed) for o in timeline.outages()] == [(1, 3, 2), (4, 5, 1)]
    assert timeline.longest_outage() == 2
    assert Timeline([s(0, True)]).outages() == []


def test_outage_since_merges_what_follows_a_fault():
    def s(t: float, ok: bool, latency_ms: float = 1.0) -> Sample:
        return Sample(sent_at=t, ok=ok, latency_ms=latency_ms)

    timeline = Timeline(
        [s(0, False), s(1, True), s(2, False), s(3, False), s(4, True), s(5, False), s(6, True),
         s(7, True)], interval=1.0,
    )
    outage = timeline.outage_since(1.5)
    # From the first failure after the fault to the end of the last one; the early one is not
    # the fault's.
    assert (outage.start, outage.end, outage.failed) == (2, 6, 3)
    assert timeline.outage_since(6.5) is None


@dataclass(frozen=True)
class Amphora:
    id: str


def test_answering_amphora_names_the_one_behind_the_url(backend: Backend):
    amphorae = [Amphora("amp-a"), Amphora("amp-b")]
    backend.up("amp-b")
    url = f"http://127.0.0.1:{backend.port}/"
    assert answering_amphora(url, amphorae) is amphorae[1]
    assert answering_amphora(url, amphorae[:1]) is None  # answered by an amphora not listed
    backend.down()
    assert answering_amphora(url, amphorae, timeout=0.5) is None


def timeline(points: list[tuple[float, bool, float]], interval: float = 0.1) -> Timeline:
    """A timeline of (sent at, ok, latency ms) samples."""
    return Timeline(samples=[Sample(sent_at=t, ok=ok, latency_ms=ms) for t, ok, ms in points],
                    interval=interval)


def test_downtime_counts_failed_requests_from_the_fault():
    steady = [(t / 10, True, 1.0) for t in range(20)]
    assert timeline(steady).downtime(1.0) == pytest.approx(0.1)
    # Requests sent from 1.0 to 2.9 fail; the one sent at 3.0 is answered at 3.001.
    failing = [(t / 10, not 10 <= t < 30, 1.0) for t in range(40)]
    assert timeline(failing).downtime(1.0) == pytest.approx(2.001)
    # A relapse after a brief recovery: the longer stretch, from the last answer before it
    # (sent at 1.9) to the first after it (sent at 3.0), is the down time.
    relapse = [(t / 10, not (10 <= t < 15 or 20 <= t < 30), 1.0) for t in range(40)]
    assert timeline(relapse).downtime(1.0) == pytest.approx(1.1)


def test_downtime_counts_held_requests_as_well_as_failed_ones():
    # Nothing failed, but the requests sent at 1.0 and 1.5 were held until 2.5.
    held = timeline([(0.0, True, 10), (1.0, True, 1500), (1.5, True, 1000), (3.0, True, 10)],
                    interval=0.5)
    assert held.outages() == []
    assert held.downtime(1.0) == pytest.approx(1.5)
    # The request sent at 1.0 hangs 700 ms and the next ones queue behind it.
    queued = timeline([(t / 10, True, 1.0) for t in range(10)] + [(1.0, True, 700.0)]
                      + [(1.1 + t / 10, True, max(1.0, 600.0 - t * 100)) for t in range(10)])
    assert queued.downtime(1.0) == pytest.approx(0.7, abs=0.01)


def test_downtime_runs_to_the_end_of_the_recording_when_no_answer_came():
    # No answer at all after the fault: down until the recording ended (last send + interval).
    assert timeline([(0.0, True, 10), (1.0, False, 800)], interval=0.5).downtime(0.5) \
        == pytest.approx(1.0)
    assert timeline([(0.0, True, 1.0), (0.1, True, 1.0)]).downtime(5.0) == 0.0
    assert Timeline().downtime(1.0) == 0.0
