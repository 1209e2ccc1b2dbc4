"""The amphora image's syslog receiver (images/amphora/amphora_syslog.py), run as a host process:
every datagram becomes one line of the log file, bursts included, and SIGTERM removes the socket.
(It raises the kernel's datagram queue only when asked, which a test on the host does not.)"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.paths import IMAGES_DIR
from harness.polling import poll_until

SINK = IMAGES_DIR / "amphora" / "amphora_syslog.py"
WAIT_S = 10.0
# A burst: more than the kernel's default queue of 10, sent without pause; the sender waits
# (blocking socket) when the queue is full, as a sender that must not lose lines would.
BURST = 200


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    path, log = tmp_path / "run" / "log", tmp_path / "var" / "haproxy.log"
    process = subprocess.Popen([sys.executable, str(SINK), str(path), str(log)])
    try:
        assert poll_until(path.exists, WAIT_S, 0.02), "the receiver never made its socket"
        yield process, path, log
    finally:
        process.kill()
        process.wait(WAIT_S)


def _send(path: Path, lines: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        for line in lines:
            sender.sendto(line, str(path))


def _lines(log: Path) -> list[bytes]:
    return log.read_bytes().splitlines() if log.exists() else []


def test_every_datagram_is_one_line_in_order(sink: tuple[subprocess.Popen, Path, Path]) -> None:
    _, path, log = sink
    sent = [b"<134>one", b"<134>two\n", *(f"<134>burst {n}".encode() for n in range(BURST))]
    _send(path, sent)
    assert poll_until(lambda: len(_lines(log)) >= len(sent), WAIT_S, 0.02), _lines(log)[-3:]
    assert _lines(log) == [line.rstrip(b"\n") for line in sent]


def test_the_socket_admits_an_unprivileged_sender(
        sink: tuple[subprocess.Popen, Path, Path]) -> None:
    _, path, _ = sink
    assert path.stat().st_mode & 0o777 == 0o666


def test_sigterm_ends_it_and_removes_the_socket(sink: tuple[subprocess.Popen, Path, Path]) -> None:
    process, path, _ = sink
    process.send_signal(signal.SIGTERM)
    assert process.wait(WAIT_S) == 0
    assert not path.exists()
