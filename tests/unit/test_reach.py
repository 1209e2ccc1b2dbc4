"""harness.lab.reach and harness.lab.mux: the relay that opens a lab's connections from inside
it (one stream carrying them all), run here as a local process behind a stand-in for Docker's
multiplexed exec stream, against local servers."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
from ipaddress import IPv4Address, IPv4Network

import pytest
import requests
import urllib3

from harness.lab import reach
from harness.polling import poll_until

STDOUT, STDERR = 1, 2


def _frames(pipe, kind: int, sink: socket.socket, lock: threading.Lock) -> None:
    with contextlib.suppress(OSError):  # the relay let go of the stream
        while data := pipe.read1(65536):
            with lock:
                sink.sendall(struct.pack(">BxxxL", kind, len(data)) + data)


def local_stream(argv: list[str]) -> socket.socket:
    """argv run here, its output framed as Docker frames an exec's attached stream; stdin fed
    from the stream (EOF on half-close), as the engine does."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen([sys.executable, *argv[1:]], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = threading.Lock()
    outputs = [threading.Thread(target=_frames, args=(pipe, kind, theirs, lock), daemon=True)
               for pipe, kind in ((process.stdout, STDOUT), (process.stderr, STDERR))]

    def feed() -> None:
        with contextlib.suppress(OSError):  # the program ended first
            while data := theirs.recv(65536):
                process.stdin.write(data)
                process.stdin.flush()
        with contextlib.suppress(OSError):
            process.stdin.close()

    feeding = threading.Thread(target=feed, daemon=True)

    def finish() -> None:
        for thread in outputs:
            thread.join()
        process.wait()
        process.stdout.close()
        process.stderr.close()
        with contextlib.suppress(OSError):
            theirs.shutdown(socket.SHUT_WR)
        feeding.join()
        theirs.close()

    for thread in [*outputs, feeding, threading.Thread(target=finish, daemon=True)]:
        thread.start()
    return ours


@pytest.fixture
def relayed_loopback():
    network = IPv4Network("127.0.0.0/8")
    relay = reach.Relay(local_stream, source=IPv4Address("127.0.0.1"))
    reach.route(network, relay)
    yield
    reach.unroute(network)
    relay.close()


def echo_server() -> tuple[socket.socket, int]:
    """A server that sends back what it got, then closes when the client half-closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return  # the test was over (and closed the server) before this thread accepted
        with connection:
            received = b""
            while data := connection.recv(65536):
                received += data
            connection.sendall(received.upper())

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def echoed_through(relay: reach.Relay, data: bytes) -> bytes:
    """What a fresh echo server sends back for data, over a new connection of relay."""
    server, port = echo_server()
    with server, relay.connect("127.0.0.1", port, timeout=10) as connection:
        connection.settimeout(10)
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        return connection.makefile("rb").read()


def test_bytes_and_a_half_close_pass_both_ways(relayed_loopback):
    server, port = echo_server()
    with server, reach.connect("127.0.0.1", port, timeout=10) as connection:
        assert connection.family == socket.AF_UNIX  # it went through the relay
        connection.sendall(b"x" * 200_000)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while data := connection.recv(65536):
            answer += data
    assert answer == b"X" * 200_000


def test_a_refused_connection_is_refused_here(relayed_loopback):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(ConnectionRefusedError, match="through the lab's relay"):
        reach.connect("127.0.0.1", port, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)


def test_http_clients_follow_the_route_and_the_forwarder_leads_there(relayed_loopback):
    server, port = echo_server()
    forwarder = reach.Forwarder("127.0.0.1", port)
    try:
        # The forwarder's own connection goes through the relay; a client of it sees the server.
        with server, socket.create_connection((forwarder.address, forwarder.port), 5) as client:
            client.sendall(b"hello")
            client.shutdown(socket.SHUT_WR)
            assert client.makefile("rb").read() == b"HELLO"
    finally:
        forwarder.close()


def test_addresses_outside_the_routes_are_reached_directly():
    assert reach.relay_for("127.0.0.1") is None
    assert reach.relay_for("localhost") is None
    server, port = echo_server()
    with server, reach.connect("127.0.0.1", port, timeout=5) as connection:
        assert connection.family == socket.AF_INET


def test_urllib3_connects_directly_again_once_the_last_route_is_gone():
    first, second = IPv4Network("127.0.0.0/8"), IPv4Network("198.51.100.0/24")
    relay = reach.Relay(local_stream, source=IPv4Address("127.0.0.1"))
    direct = urllib3.util.connection.create_connection
    reach.route(first, relay)
    reach.route(second, relay)
    try:
        reach.unroute(first)
        assert urllib3.util.connection.create_connection is not direct  # second still routed
    finally:
        reach.unroute(second)
        reach.unroute(first)
    assert urllib3.util.connection.create_connection is direct


def test_datagrams_to_a_lab_address_are_received_there_and_read_back():
    datagrams = reach.Relay(local_stream, source=IPv4Address("127.0.0.1")).datagrams("127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            for payload in (b"one", b"\x00two\n" * 1000):
                sender.sendto(payload, datagrams.address)
            received = [datagrams.receive(5) for _ in range(2)]
            assert received == [(b"one", sender.getsockname()),
                                (b"\x00two\n" * 1000, sender.getsockname())]
        assert datagrams.receive(0.1) is None
    finally:
        datagrams.close()
    with pytest.raises(OSError, match="ended"):
        datagrams.receive(5)


def counted(opened: list[list[str]]):
    """local_stream, remembering each argv it started."""
    def open_stream(argv: list[str]) -> socket.socket:
        opened.append(argv)
        return local_stream(argv)
    return open_stream


def relay_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("relay ")]


def test_every_connection_of_a_relay_shares_one_stream():
    opened: list[list[str]] = []
    relay = reach.Relay(counted(opened), source=IPv4Address("127.0.0.1"))
    servers = [echo_server() for _ in range(12)]
    answers: dict[int, bytes] = {}

    def ask(port: int) -> None:
        with relay.connect("127.0.0.1", port, timeout=10) as connection:
            connection.sendall(b"n%d" % port)
            connection.shutdown(socket.SHUT_WR)
            answers[port] = connection.makefile("rb").read()

    try:
        askers = [threading.Thread(target=ask, args=(port,)) for _, port in servers]
        for thread in askers:
            thread.start()
        for thread in askers:
            thread.join(10)
    finally:
        relay.close()
        for server, _ in servers:
            server.close()
    assert answers == {port: b"N%d" % port for _, port in servers}
    assert len(opened) == 1


def test_a_connection_whose_peer_stops_reading_holds_up_no_other():
    relay = reach.Relay(local_stream, source=IPv4Address("127.0.0.1"))
    deaf = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never reads
    stuck = relay.connect("127.0.0.1", deaf.getsockname()[1], timeout=10)

    def send_a_lot() -> None:
        with contextlib.suppress(OSError):  # the test closed it
            stuck.sendall(b"x" * 20_000_000)

    flood = threading.Thread(target=send_a_lot, daemon=True)
    try:
        flood.start()
        flood.join(0.5)  # the deaf peer's buffers fill: the relay's writer to it waits
        assert echoed_through(relay, b"still") == b"STILL"
    finally:
        stuck.close()
        relay.close()
        deaf.close()


def test_closing_the_relay_ends_its_connections_and_threads():
    relay = reach.Relay(local_stream, source=IPv4Address("127.0.0.1"))
    held = socket.create_server(("127.0.0.1", 0))  # keeps the connection open
    connection = relay.connect("127.0.0.1", held.getsockname()[1], timeout=10)
    try:
        assert relay_threads()
        relay.close()
        connection.settimeout(10)
        assert connection.recv(10) == b""  # ended with the stream
        assert poll_until(lambda: not relay_threads(), 10, 0.05), relay_threads()
    finally:
        connection.close()
        held.close()


def test_a_reset_connection_ends_here_and_the_relay_serves_on():
    relay = reach.Relay(local_stream, source=IPv4Address("127.0.0.1"))
    server = socket.create_server(("127.0.0.1", 0))

    def reset() -> None:
        connection, _ = server.accept()
        connection.recv(1)  # the client is connected (a reset before would fail its connect)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()  # linger 0: an RST, not a FIN

    resetter = threading.Thread(target=reset, daemon=True)
    resetter.start()
    try:
        with relay.connect("127.0.0.1", server.getsockname()[1], timeout=10) as connection:
            connection.settimeout(10)
            connection.sendall(b"x")
            assert connection.recv(10) == b""
        assert echoed_through(relay, b"on") == b"ON"
    finally:
        relay.close()
        server.close()
