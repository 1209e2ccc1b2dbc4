"""harness.observe.haproxy_stats against a real haproxy on loopback: its stats socket, its stats
page (through the
haproxy-stats package) and the byte bounds, with exact requests sent over raw sockets."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import polling
from harness.observe.haproxy_stats import (
    StatsError,
    UnixStatsSocket,
    counted_bytes_range,
    head_size,
    http_exchange,
    parse_csv,
    read_stats_page,
    show_stat,
)

LISTENER = "0b7a3f56-8f0c-4b0e-9f57-6a7b1d2c3e4f"
POOL = "5d1c8e2a-7b3f-4a9e-8c6d-2f1e0a9b8c7d"
MEMBERS = {
    "up": "11111111-2222-4333-8444-555555555555",
    "drained": "66666666-7777-4888-9999-aaaaaaaaaaaa",
    "disabled": "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff",
}
GOOD_REQUEST = b"GET /%d HTTP/1.1\r\nHost: stats-test\r\nConnection: close\r\n\r\n"
MALFORMED_REQUEST = b"NOT AN HTTP REQUEST\r\n\r\n"
WAIT_S = 10.0


@dataclass(frozen=True)
class HostHaproxy:
    listener_port: int
    page_port: int
    stats_socket: UnixStatsSocket


def wait_until(condition: Callable[[], bool], what: str) -> None:
    polling.wait_until(condition, WAIT_S, what)


def answers(stats_socket: UnixStatsSocket) -> bool:
    try:
        show_stat(stats_socket)
    except StatsError:
        return False
    return True


@pytest.fixture
def haproxy(free_port, http_backend) -> Iterator[HostHaproxy]:
    """haproxy with one listener in the Amphora API's naming, three members (one up, one
    drained, one disabled; no health checks), a stats socket and a stats page at /."""
    directory = Path(tempfile.mkdtemp(prefix="ah-stats-"))  # short: a socket path lives here
    listener_port, page_port = free_port(), free_port()
    servers = "\n".join([
        f"    server {MEMBERS['up']} 127.0.0.1:{http_backend.port} weight 1",
        f"    server {MEMBERS['drained']} 127.0.0.1:{http_backend.port} weight 0",
        f"    server {MEMBERS['disabled']} 127.0.0.1:{http_backend.port} weight 1 disabled",
    ])
    config = directory / "haproxy.cfg"
    config.write_text(f"""global
    stats socket {directory}/stats.sock mode 0600 level user

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend {LISTENER}
    bind 127.0.0.1:{listener_port}
    http-response set-header X-Amphora-Id stats-test
    default_backend {POOL}:{LISTENER}

backend {POOL}:{LISTENER}
{servers}

listen stats-page
    bind 127.0.0.1:{page_port}
    stats enable
    stats uri /
""")
    process = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f",
                                str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    stats_socket = UnixStatsSocket(directory / "stats.sock")
    try:
        # Not probing the listener: a probe would be a connection in its counters. haproxy
        # binds every listener before its stats socket answers.
        wait_until(lambda: answers(stats_socket), "haproxy's stats socket answering")
        yield HostHaproxy(listener_port, page_port, stats_socket)
    finally:
        process.kill()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def test_counters_match_what_was_sent(haproxy: HostHaproxy):
    good = [http_exchange("127.0.0.1", haproxy.listener_port, GOOD_REQUEST % n)
            for n in range(5)]
    bad = [http_exchange("127.0.0.1", haproxy.listener_port, MALFORMED_REQUEST)
           for _ in range(2)]
    assert [e.status for e in good] == [200] * 5 and [e.status for e in bad] == [400] * 2
    # A connection's counts are final when haproxy has closed its side, just after the client
    # saw the end: wait until nothing is open any more.
    wait_until(lambda: show_stat(haproxy.stats_socket).frontend(LISTENER)["conns"] == 0,
               "all connections closed")
    counters = show_stat(haproxy.stats_socket).frontend(LISTENER)
    assert counters["totconns"] == 7
    assert counters["ereq"] == 2
    low, high = counted_bytes_range(e.request for e in good)
    assert low <= counters["rx"] <= high, (low, counters["rx"], high)
    low, high = counted_bytes_range(e.response for e in good)
    assert low <= counters["tx"] <= high, (low, counters["tx"], high)


def test_held_connections_are_current_sessions(haproxy: HostHaproxy):
    def conns() -> int:
        return show_stat(haproxy.stats_socket).frontend(LISTENER)["conns"]

    with contextlib.ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(socket.create_connection(("127.0.0.1", haproxy.listener_port)))
        wait_until(lambda: conns() == 3, "3 current sessions")
    wait_until(lambda: conns() == 0, "no current session")
    assert show_stat(haproxy.stats_socket).frontend(LISTENER)["totconns"] == 3


def test_stats_page_and_socket_agree(haproxy: HostHaproxy):
    for n in range(3):
        http_exchange("127.0.0.1", haproxy.listener_port, GOOD_REQUEST % n)
    wait_until(lambda: show_stat(haproxy.stats_socket).frontend(LISTENER)["conns"] == 0,
               "all connections closed")
    page = read_stats_page("127.0.0.1", haproxy.page_port)
    table = show_stat(haproxy.stats_socket)
    assert page.frontend(LISTENER) == table.frontend(LISTENER)
    assert page.frontend(LISTENER)["totconns"] == 3
    statuses = page.server_statuses(POOL, LISTENER)
    assert statuses == table.server_statuses(POOL, LISTENER)
    assert statuses == {MEMBERS["up"]: "no check", MEMBERS["drained"]: "no check",
                        MEMBERS["disabled"]: "MAINT"}
    weights = {m: page.row(f"{POOL}:{LISTENER}", m)["weight"] for m in MEMBERS.values()}
    assert weights[MEMBERS["drained"]] == "0" and weights[MEMBERS["up"]] == "1"


def test_unreadable_statistics_raise(free_port, tmp_path: Path):
    with pytest.raises(StatsError, match="stats page"):
        read_stats_page("127.0.0.1", free_port(), timeout=2)
    with pytest.raises(StatsError, match="stats socket"):
        show_stat(UnixStatsSocket(tmp_path / "missing.sock"))
    with pytest.raises(StatsError, match="not haproxy CSV"):
        parse_csv("Unknown command.\n")
    with pytest.raises(StatsError, match="no statistics row"):
        parse_csv("# pxname,svname,stot\nfe,FRONTEND,1\n").frontend("other")


def test_counted_range_is_the_bodies_give_or_take_the_heads():
    message = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    head = len(message) - 2
    assert head_size(message) == head
    assert counted_bytes_range([message, message]) == (4, 2 * len(message) + 2 * head)
    with pytest.raises(ValueError, match="not an HTTP/1 message"):
        head_size(b"no head end")
