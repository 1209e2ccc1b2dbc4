"""How the harness reaches addresses inside a lab.

A lab on this host's Docker Engine (or in network namespaces here) has its bridges' gateway
addresses on this host, and the harness connects straight to its nodes. A lab on an engine
elsewhere (another machine, or a network namespace of its own) is reached only through that
engine's API: a relay process in a lab node (the lab's gateway node, on all three networks) opens
each TCP connection from inside the lab, and its standard input and output, attached through the
API's exec stream, carry the bytes of every connection at once (harness.lab.mux: one exec per
lab, not one per connection). `route(network, relay)` sends every connection to addresses
in network that way; `connect` and every HTTP client of this process (requests, through urllib3)
then follow the routes, so the agent client, probes and fixtures need not know where a lab is.
Datagrams to the lab's side of the harness (heartbeats) go the other way: a UDP listener in the
gateway node writes each one to its stdout, read back here (Datagrams, RelayedDatagrams).
"""

from __future__ import annotations

import contextlib
import errno
import queue
import socket
import struct
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Protocol

import urllib3.util.connection

from harness.lab.mux import ExecStream, Multiplexer, StdoutReader, close_stream, raw_socket

# Runs in the gateway node: bind UDP to argv[1] (any port), print the port as one line, then
# write each datagram as <sender length: 2 bytes><length: 4 bytes><"ip port"><datagram>. It ends
# when its stdin does (the harness closed the stream).
UDP_LISTENER_PROGRAM = """
import os, socket, struct, sys, threading
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 0))
out = sys.stdout.buffer
out.write(b"%d\\n" % sock.getsockname()[1])
out.flush()
threading.Thread(target=lambda: (sys.stdin.buffer.read(), os._exit(0)), daemon=True).start()
while True:
    data, (host, port) = sock.recvfrom(65535)
    sender = f"{host} {port}".encode()
    out.write(struct.pack(">HI", len(sender), len(data)) + sender + data)
    out.flush()
"""
DATAGRAM_HEADER = struct.Struct(">HI")
DEFAULT_CONNECT_TIMEOUT_S = 10.0
CHUNK = 65536


class Relay:
    """Opens connections from inside a lab: open_stream starts argv in the gateway node and
    returns its attached, multiplexed exec stream. One stream (harness.lab.mux) carries every
    connection; it is started on the first and again after it ended (the engine restarted, the
    node was replaced), and close() ends it."""

    def __init__(self, open_stream: Callable[[list[str]], ExecStream], source: IPv4Address):
        self._open_stream = open_stream
        self.source = source  # the gateway node's VIP-network address: what members see
        self._lock = threading.Lock()
        self._multiplexer: Multiplexer | None = None

    def connect(self, address: str, port: int, timeout: float | None = None) -> socket.socket:
        """A connected socket to address:port, opened in the lab. Raises OSError as a direct
        connect would (ConnectionRefusedError, TimeoutError, ...)."""
        limit = timeout if isinstance(timeout, int | float) else DEFAULT_CONNECT_TIMEOUT_S
        with self._lock:
            if self._multiplexer is None or self._multiplexer.ended.is_set():
                self._multiplexer = Multiplexer(self._open_stream)
            multiplexer = self._multiplexer
        local = multiplexer.connect(address, port, limit)
        local.settimeout(timeout if isinstance(timeout, int | float) else None)
        return local

    def close(self) -> None:
        """End the stream and every connection on it (the lab goes down)."""
        with self._lock:
            multiplexer, self._multiplexer = self._multiplexer, None
        if multiplexer is not None:
            multiplexer.close()

    def datagrams(self, address: str) -> RelayedDatagrams:
        """UDP datagrams to address (one of the gateway node's), received there."""
        return RelayedDatagrams(self._open_stream, address)


class Datagrams(Protocol):
    """Where datagrams to `address` arrive."""

    address: tuple[str, int]

    def receive(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        """The next datagram and its sender, None after timeout seconds; OSError once closed."""

    def close(self) -> None: ...


class UdpDatagrams:
    """A UDP socket of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self.address: tuple[str, int] = self._sock.getsockname()

    def receive(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        self._sock.settimeout(timeout)
        try:
            return self._sock.recvfrom(65535)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._sock.close()


class RelayedDatagrams:
    """Datagrams to a lab node's address, received by UDP_LISTENER_PROGRAM in that node and
    read back through the engine (harness.observe.heartbeats.Datagrams)."""

    def __init__(self, open_stream: Callable[[list[str]], ExecStream], address: str) -> None:
        self._stream = open_stream(["python3", "-c", UDP_LISTENER_PROGRAM, address])
        self._output = StdoutReader(self._stream)
        port = self._output.line()
        if not port.isdigit():
            close_stream(self._stream)
            reason = port or self._output.errors.decode(errors="replace")[-300:] or "it ended"
            raise OSError(errno.EADDRNOTAVAIL, f"no UDP listener on {address} in the lab: "
                          f"{reason}")
        self.address = (address, int(port))
        self._received: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name=f"datagrams to {address}").start()

    def _read(self) -> None:
        with contextlib.suppress(EOFError, OSError):  # OSError: close() took the stream away
            while True:
                sender_length, length = DATAGRAM_HEADER.unpack(
                    self._output.exactly(DATAGRAM_HEADER.size))
                host, _, port = self._output.exactly(sender_length).decode().partition(" ")
                self._received.put((self._output.exactly(length), (host, int(port))))
        self._received.put(None)  # the listener ended

    def receive(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        try:
            received = self._received.get(timeout=timeout)
        except queue.Empty:
            return None
        if received is None:
            self._received.put(None)
            raise OSError(errno.EPIPE, f"the UDP listener on {self.address[0]} ended")
        return received

    def close(self) -> None:
        with contextlib.suppress(OSError):
            raw_socket(self._stream).shutdown(socket.SHUT_WR)  # its stdin ends: it exits
        close_stream(self._stream)


_routes: dict[IPv4Network, Relay] = {}
_routes_lock = threading.Lock()
_direct_create_connection = urllib3.util.connection.create_connection


def route(network: IPv4Network, relay: Relay) -> None:
    """Open every later connection to an address in network through relay."""
    with _routes_lock:
        _routes[network] = relay
        # Every HTTP client here (requests and so the agent client, probes, fixtures) connects
        # through urllib3's create_connection: routing there reaches them all.
        urllib3.util.connection.create_connection = _routed_create_connection


def unroute(network: IPv4Network) -> None:
    with _routes_lock:
        _routes.pop(network, None)
        if not _routes:
            # No lab is reached through a relay any more: urllib3 connects as it did before.
            urllib3.util.connection.create_connection = _direct_create_connection


def relay_for(address: str) -> Relay | None:
    try:
        parsed = ip_address(address)
    except ValueError:
        return None  # a host name: never a lab address
    with _routes_lock:
        return next((r for n, r in _routes.items() if parsed in n), None)


def connect(address: str, port: int, timeout: float | None = None) -> socket.socket:
    """A TCP connection to a lab address (or any other), through its lab's relay if it has one."""
    relay = relay_for(address)
    if relay is None:
        return socket.create_connection((address, port), timeout)
    return relay.connect(address, port, timeout)


def _routed_create_connection(address, timeout=urllib3.util.connection._DEFAULT_TIMEOUT,
                              source_address=None, socket_options=None) -> socket.socket:
    host, port = address
    relay = relay_for(host.strip("[]"))
    if relay is None:
        return _direct_create_connection(address, timeout, source_address, socket_options)
    # socket_options are TCP ones (TCP_NODELAY): the relay's own TCP socket is what they mean.
    return relay.connect(host, port, timeout)


class Forwarder:
    """A port on this host's loopback whose connections go on to target through connect (and
    so through the target's lab relay): for another process, which cannot follow this process's
    routes (Octavia's driver, in its own virtualenv). close() stops it."""

    def __init__(self, address: str, port: int) -> None:
        self.target = (address, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address, self.port = self._listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True,
                         name=f"forward :{self.port} to {address}:{port}").start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            inner = connect(*self.target, timeout=DEFAULT_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()  # the caller sees the refusal as a closed connection
            return
        inner.settimeout(None)
        back = threading.Thread(target=_copy, args=(inner, client), daemon=True)
        back.start()
        _copy(client, inner)
        back.join()
        inner.close()
        client.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    """source into sink until EOF, then half-close sink (the other way may still be busy)."""
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
