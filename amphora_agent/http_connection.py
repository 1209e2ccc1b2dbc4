"""HTTP/1.1 on one authenticated connection: requests one after the other (keep-alive), each
handed to the WSGI app.

werkzeug's development server answers every request with `Connection: close`, since it cannot
tell where an unread request body ends; a controller's session then pays a TCP and TLS handshake
per call. Here each request body is read through a reader that knows its end (the
Content-Length, or the chunked encoding's last chunk), so after the answer what the app left
unread can be skipped and the connection serves the next request. A connection is kept only
when that is cheap and safe: a body left unread must be small (KEEP_ALIVE_DRAIN_BYTES), the
client must speak HTTP/1.1 and not have asked to close. Between requests it waits at most
IDLE_TIMEOUT_S, and the server's admission bounds how many wait at once (admission.py).
"""

from __future__ import annotations

import io
import json
import logging
import socket
from http import HTTPStatus

from werkzeug.serving import DechunkedInput, WSGIRequestHandler

from amphora_agent.admission import Ticket

LOG = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 5.0
# What of a body the app did not read is skipped to keep the connection; a larger rest (an
# upload refused with 413 before it was read) closes it instead.
KEEP_ALIVE_DRAIN_BYTES = 64 * 1024
# Before closing on a body left unread, what is read and dropped so that the client, still
# sending, gets to read the answer instead of a connection reset.
LINGER_BYTES = 64 * 1024 * 1024
LINGER_IDLE_S = 1.0
_READ = 64 * 1024


def error_body(message: str, details: str) -> bytes:
    """The API's JSON error body, for answers the Flask app does not write."""
    return json.dumps({"message": message, "details": details}).encode()


class SizedBody(io.RawIOBase):
    """A request body of Content-Length bytes: reads end there, and a client that sends less is
    an error (OSError, which the API turns into a 400)."""

    def __init__(self, stream: io.BufferedReader, length: int) -> None:
        self._stream = stream
        self.remaining = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.remaining <= 0:
            return 0
        data = self._stream.read1(min(len(buffer), self.remaining))
        if not data:
            raise OSError(f"the client closed the connection {self.remaining} bytes short")
        buffer[:len(data)] = data
        self.remaining -= len(data)
        return len(data)


class RequestBody(io.RawIOBase):
    """What the app reads a request body through: a SizedBody or werkzeug's DechunkedInput.
    Once a read failed (a malformed chunk, a client gone), where the body ends is unknown."""

    def __init__(self, source: io.RawIOBase) -> None:
        self._source = source
        self.broken = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._source.readinto(buffer)
        except OSError:
            self.broken = True
            raise

    def drain(self, limit: int) -> bool:
        """Read and drop the rest; True when the body ended within limit bytes."""
        dropped = 0
        try:
            while not self.broken and (chunk := self.read(min(_READ, limit - dropped + 1))):
                dropped += len(chunk)
                if dropped > limit:
                    return False
        except OSError:  # a client gone, or too slow for the caller's timeout
            return False
        return not self.broken


class AgentRequestHandler(WSGIRequestHandler):
    """Serves the requests of one authenticated connection (see the module doc); ticket is its
    place in the server's admission."""

    protocol_version = "HTTP/1.1"

    def __init__(self, request: socket.socket, client_address, server, ticket: Ticket) -> None:
        self.ticket = ticket
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self._next_request_arrived():
            self.handle_one_request()

    def _next_request_arrived(self) -> bool:
        """Wait, idle, for the first bytes of the next request; False when the idle timeout
        passed, the client closed, or admission cut the connection to make room."""
        admission = self.server.admission
        admission.idle(self.ticket)
        self.connection.settimeout(IDLE_TIMEOUT_S)
        try:
            arrived = bool(self.rfile.peek(1))
        except OSError:
            arrived = False
        self.connection.settimeout(self.timeout)
        # A connection cut just as a request arrived does not serve it: the client sees the
        # connection closed, as after an idle timeout, and may send it again.
        return arrived and admission.busy(self.ticket)

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body, framed = self._body(environ)
        environ["wsgi.input"] = body
        # The body ends where it should: werkzeug may hand it to the app as it is.
        environ["wsgi.input_terminated"] = True
        status, headers, payload = self._call_app(environ)
        framing = {name.lower(): value for name, value in headers
                   if name.lower() in ("connection", "content-length", "transfer-encoding")}
        # A handler closes the connection by answering with `Connection: close` (after a
        # server certificate rotation, so that the client's next call meets the new one).
        app_closes = framing.get("connection", "").lower() == "close"
        keep_alive = (not self.close_connection and not app_closes and framed
                      and self._drain(body, KEEP_ALIVE_DRAIN_BYTES))
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in framing:
                self.send_header(name, value)
        # HEAD: the length the GET would have had, as the app computed it.
        length = framing.get("content-length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(payload)))
        # http.server's send_header sets close_connection from this header.
        self.send_header("Connection", "keep-alive" if keep_alive else "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()
        if not keep_alive and framed:
            self._drain(body, LINGER_BYTES)

    def _drain(self, body: RequestBody, limit: int) -> bool:
        """body.drain, never waiting more than LINGER_IDLE_S for the client's next bytes."""
        self.connection.settimeout(LINGER_IDLE_S)
        try:
            return body.drain(limit)
        finally:
            self.connection.settimeout(self.timeout)

    def _body(self, environ: dict) -> tuple[RequestBody, bool]:
        """The request body's reader, and whether its end is known (else the connection cannot
        serve another request after this one)."""
        if isinstance(environ["wsgi.input"], DechunkedInput):  # make_environ saw chunked
            return RequestBody(environ["wsgi.input"]), True
        declared = environ.get("CONTENT_LENGTH", "")
        if declared and not declared.isdigit():
            return RequestBody(SizedBody(self.rfile, 0)), False
        return RequestBody(SizedBody(self.rfile, int(declared or 0))), True

    def _call_app(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        answer: list = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            answer[:] = [status, headers]
            return lambda _data: None  # the app returns its body; nothing writes directly

        try:
            result = self.server.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
            return answer[0], answer[1], payload
        except Exception:  # the Flask app answers its own errors; this is a bug of ours
            LOG.exception("the app failed on %s", self.requestline)
            self.close_connection = True
            return ("500 Internal Server Error", [("Content-Type", "application/json")],
                    error_body("Internal Server Error", ""))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        LOG.info('%s "%s" %s %s', self.address_string(), self.requestline, code, size)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Requests too broken to reach the app (bad request line, oversized headers) get the
        API's JSON error body too, instead of http.server's HTML page; the connection closes."""
        self.close_connection = True
        body = error_body(message or HTTPStatus(code).phrase, explain or "")
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
