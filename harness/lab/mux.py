"""Many TCP connections over one exec stream: how a lab reached through its engine
(harness.lab.reach) opens connections without an exec each.

One MUX_PROGRAM runs in the lab's gateway node for as long as the lab is reached; its stdin and
stdout, attached through the engine's API, carry frames of every connection the harness opens
into the lab. A frame is HEADER (kind, connection number, payload length) and the payload:

    harness -> relay   OPEN "address port timeout", DATA, EOF (the harness's side half-closed),
                       CLOSE (the harness gave the connection up: drop it)
    relay -> harness   OPENED, ERROR "errno reason" (the connect failed, or the connection broke
                       after it), DATA, EOF (the lab's side half-closed)

Each side queues what arrives for a connection and writes it out in a thread of that
connection, so a peer that stops reading holds up its own connection only, never the stream.
The relay ends when its stdin does: closing the stream ends every connection with it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import queue
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from docker.utils.socket import STDOUT, frames_iter

HEADER = struct.Struct(">BII")
OPEN, DATA, EOF, CLOSE, OPENED, ERROR = range(1, 7)
CHUNK = 65536
# How much longer than the connect's own timeout the harness waits for OPENED or ERROR: the
# relay answers within the timeout unless the stream itself is stuck.
ANSWER_MARGIN_S = 5.0
# The end of what a relay program wrote on stderr that is kept, for its error message.
ERRORS_KEPT = 2000
# How long close() waits for the relay to end once its stdin is closed.
CLOSE_WAIT_S = 5.0

# Runs in the gateway node (python3 of the member image); the frame kinds above, by number.
MUX_PROGRAM = """
import os, queue, socket, struct, sys, threading
HEADER = struct.Struct(">BII")
OPEN, DATA, EOF, CLOSE, OPENED, ERROR = range(1, 7)
output = threading.Lock()
pending = {}
def send(kind, number, data=b""):
    view = memoryview(HEADER.pack(kind, number, len(data)) + data)
    with output:
        while view:
            view = view[os.write(1, view):]
def read(count):
    data = b""
    while len(data) < count:
        chunk = os.read(0, count - len(data))
        if not chunk:
            os._exit(0)
        data += chunk
    return data
def reason(exc, default):
    return f"{exc.errno or default} {exc.strerror or exc}".encode()
def write(peer, inbox):
    try:
        while not isinstance(item := inbox.get(), int):
            peer.sendall(item)
        peer.shutdown(socket.SHUT_WR if item == EOF else socket.SHUT_RDWR)
    except OSError:
        try:
            peer.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(number, inbox, host, port, timeout):
    try:
        peer = socket.create_connection((host, int(port)), float(timeout))
    except OSError as exc:
        pending.pop(number, None)
        send(ERROR, number, reason(exc, 110))
        return
    peer.settimeout(None)
    send(OPENED, number)
    writer = threading.Thread(target=write, args=(peer, inbox), daemon=True)
    writer.start()
    try:
        while data := peer.recv(65536):
            send(DATA, number, data)
        send(EOF, number)
    except OSError as exc:
        send(ERROR, number, reason(exc, 104))
    writer.join()
    pending.pop(number, None)
    peer.close()
while True:
    kind, number, length = HEADER.unpack(read(HEADER.size))
    data = read(length)
    if kind == OPEN:
        pending[number] = inbox = queue.SimpleQueue()
        threading.Thread(target=serve, args=(number, inbox, *data.decode().split()),
                         daemon=True).start()
    elif (inbox := pending.get(number)) is not None:
        inbox.put(data if kind == DATA else kind)
"""


class ExecStream(Protocol):
    """What an engine's attached exec gives: the socket-like object docker-py returns."""

    def fileno(self) -> int: ...


def raw_socket(stream: ExecStream):
    """The socket under docker-py's SocketIO wrapper (unix, tcp), or the object itself."""
    return getattr(stream, "_sock", stream)


def close_stream(stream: ExecStream) -> None:
    with contextlib.suppress(OSError):
        raw_socket(stream).close()


def connect_error(text: bytes, target: str) -> OSError:
    code, _, reason = text.decode(errors="replace").partition(" ")
    number = int(code) if code.isdigit() else errno.EHOSTUNREACH
    # OSError(errno, ...) is built as its subclass: ConnectionRefusedError, TimeoutError, ...
    return OSError(number, f"{reason or 'no connection'} (to {target}, through the lab's relay)")


class StdoutReader:
    """Bytes of a relay program's stdout, out of the stream's Docker frames, read by length or
    by line; what it writes on stderr is kept for a readable failure."""

    def __init__(self, stream: ExecStream) -> None:
        self._frames = frames_iter(stream, tty=False)
        self._buffer = bytearray()
        self.errors = bytearray()

    def _fill(self) -> None:
        for kind, data in self._frames:
            if kind == STDOUT:
                self._buffer += data
                return
            self.errors = (self.errors + data)[-ERRORS_KEPT:]
        raise EOFError

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken

    def line(self) -> str:
        with contextlib.suppress(EOFError):
            while b"\n" not in self._buffer:
                self._fill()
            end = self._buffer.index(b"\n") + 1
            return self.exactly(end).decode().strip()
        return ""


class _Connection:
    """One connection's state here: whether the relay answered its OPEN, and what arrived."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.refusal: bytes | None = None  # ERROR's payload, when the connect failed
        self.inbox: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()


class Multiplexer:
    """The harness's end of one MUX_PROGRAM: connect() gives a local socket whose bytes travel
    as frames of its connection. Once the stream ends (close(), or the relay or engine went
    away) every connection ends and connect() raises; `ended` says so."""

    def __init__(self, open_stream: Callable[[list[str]], ExecStream]) -> None:
        self._stream = open_stream(["python3", "-c", MUX_PROGRAM])
        self._socket = raw_socket(self._stream)
        self._output = StdoutReader(self._stream)
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}
        self._numbers = itertools.count(1)
        self.ended = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="relay stream")
        self._reader.start()

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """A connected socket to address:port, opened in the lab within timeout seconds;
        raises OSError as a direct connect would (ConnectionRefusedError, TimeoutError, ...)."""
        connection = _Connection()
        with self._lock:
            if self.ended.is_set():
                raise ConnectionResetError(errno.ECONNRESET, self._why_ended())
            number = next(self._numbers)
            self._connections[number] = connection
        target = f"{address}:{port}"
        try:
            self._send(OPEN, number, f"{address} {port} {timeout}".encode())
        except OSError as exc:
            self._forget(number)
            raise ConnectionResetError(errno.ECONNRESET, f"{self._why_ended()} ({exc}; to "
                                       f"{target})") from exc
        if not connection.answered.wait(timeout + ANSWER_MARGIN_S):
            self._forget(number)
            with contextlib.suppress(OSError):
                self._send(CLOSE, number)
            raise TimeoutError(errno.ETIMEDOUT, f"the lab's relay did not answer (to {target})")
        if connection.refusal is not None:
            self._forget(number)
            raise connect_error(connection.refusal, target)
        local, inner = socket.socketpair()
        downstream = threading.Thread(target=self._downstream, args=(connection, inner),
                                      daemon=True, name=f"relay from {target}")
        downstream.start()
        threading.Thread(target=self._upstream, args=(number, inner, downstream), daemon=True,
                         name=f"relay to {target}").start()
        return local

    def close(self) -> None:
        """End the relay (its stdin ends) and with it every connection; waits CLOSE_WAIT_S at
        most for it to go."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_WR)
        self._reader.join(CLOSE_WAIT_S)
        close_stream(self._stream)
        self._reader.join(CLOSE_WAIT_S)

    def _send(self, kind: int, number: int, data: bytes = b"") -> None:
        with self._send_lock:
            self._socket.sendall(HEADER.pack(kind, number, len(data)) + data)

    def _forget(self, number: int) -> None:
        with self._lock:
            self._connections.pop(number, None)

    def _why_ended(self) -> str:
        said = self._output.errors.decode(errors="replace").strip()[-300:]
        return f"the lab's relay ended{': ' + said if said else ''}"

    def _read(self) -> None:
        """Frames from the relay, handed to their connections; at the end, every connection
        still here learns the stream is gone."""
        with contextlib.suppress(EOFError, OSError):
            while True:
                kind, number, length = HEADER.unpack(self._output.exactly(HEADER.size))
                data = self._output.exactly(length)
                with self._lock:
                    connection = self._connections.get(number)
                if connection is None:
                    continue  # given up here (CLOSE sent) or already done
                if connection.answered.is_set():
                    connection.inbox.put((kind, data))
                else:
                    connection.refusal = data if kind == ERROR else None
                    connection.answered.set()
        with self._lock:
            self.ended.set()
            left = list(self._connections.values())
            self._connections.clear()
        reason = f"{errno.ECONNRESET} {self._why_ended()}".encode()
        for connection in left:
            if not connection.answered.is_set():
                connection.refusal = reason
                connection.answered.set()
            connection.inbox.put((ERROR, reason))

    def _downstream(self, connection: _Connection, inner: socket.socket) -> None:
        """What the lab's side sent, into our end of the pair; its EOF is a half-close, an
        ERROR (a reset, or the stream gone) closes both ways."""
        kind = ERROR
        with contextlib.suppress(OSError):  # the caller closed its socket
            while (item := connection.inbox.get())[0] == DATA:
                inner.sendall(item[1])
            kind = item[0]
        with contextlib.suppress(OSError):
            inner.shutdown(socket.SHUT_WR if kind == EOF else socket.SHUT_RDWR)

    def _upstream(self, number: int, inner: socket.socket,
                  downstream: threading.Thread) -> None:
        """What the caller sends, as frames, then its EOF; once both ways are done the
        connection is forgotten and our end of the pair closed."""
        with contextlib.suppress(OSError):  # the stream is gone: downstream learns it too
            while data := inner.recv(CHUNK):
                self._send(DATA, number, data)
            self._send(EOF, number)
        downstream.join()
        self._forget(number)
        inner.close()
