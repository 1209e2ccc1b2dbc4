"""The HTTPS server: mutual TLS, with the handshake done off the accept loop.

werkzeug's own TLS support wraps the listening socket, so the handshake of every client runs in
the accepting thread and one slow or hostile client stalls everyone. Here the listening socket
stays plain; each accepted connection gets its own thread, which performs the handshake within
a deadline and only then hands the TLS socket to the request handler (http_connection.py, which
serves request after request on it). A client without a certificate chaining to the CA fails the
handshake and never reaches a handler. How many connections are kept, and which one is cut when
too many wait for their handshake or idle between requests, is admission.py's business; refused
connections are logged through refusal_log.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
from pathlib import Path

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer

from amphora_agent.admission import ConnectionAdmission, Ticket
from amphora_agent.http_connection import AgentRequestHandler, error_body
from amphora_agent.refusal_log import RefusalLog

LOG = logging.getLogger(__name__)

# For the whole handshake, from accept to a verified client certificate: a driver on the
# management network needs milliseconds.
HANDSHAKE_DEADLINE_S = 5.0


def make_tls_context(server_pem: Path, ca_pem: Path) -> ssl.SSLContext:
    """A server context that presents server_pem (key + cert + chain) and demands a client cert."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(server_pem))
    context.load_verify_locations(cafile=str(ca_pem))
    return context


class ServerTls:
    """The TLS context every newly accepted connection gets; PUT /1.0/certificate replaces it
    (connections already established keep theirs)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def replace(self, context: ssl.SSLContext) -> None:
        self.context = context


class AgentServer(ThreadedWSGIServer):
    """A threaded WSGI server that speaks mutual TLS with the certificate of a ServerTls."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        app: Flask,
        server_tls: ServerTls,
        read_timeout: float,
    ) -> None:
        handler = type("ReadTimeoutHandler", (AgentRequestHandler,), {"timeout": read_timeout})
        super().__init__(host, port, app, handler=handler)
        self.server_tls = server_tls
        # Set after the base class ran, so the listening socket stays plain (see module doc);
        # werkzeug only reads it to report wsgi.url_scheme = https.
        self.ssl_context = server_tls.context
        self.admission = ConnectionAdmission()
        self.refusals = RefusalLog()

    def process_request(self, request: socket.socket, client_address) -> None:
        """On the accept loop: take a pending place (cutting another pending connection when
        none is free) and hand the connection to a thread of its own."""
        ticket, evicted = self.admission.admit(request, client_address[0])
        if evicted is not None:
            self.refusals.refused(evicted.source, "evicted to make room",
                                  "cut while waiting for its TLS handshake")
        try:
            threading.Thread(target=self._serve_connection, args=(request, client_address, ticket),
                             daemon=True).start()
        except BaseException:
            self.admission.release(ticket)
            self.shutdown_request(request)
            raise

    def service_actions(self) -> None:
        # Called by serve_forever at least every poll interval (half a second).
        self.refusals.flush()

    def _serve_connection(self, request: socket.socket, client_address, ticket: Ticket) -> None:
        connection, authenticated = self._handshake(request, client_address, ticket)
        try:
            if not authenticated:
                return
            if not self.admission.authenticate(ticket):
                self._turn_away(connection, client_address, ticket)
                return
            try:
                self.RequestHandlerClass(connection, client_address, self, ticket)
            except Exception:
                self.handle_error(connection, client_address)
        finally:
            # Before the descriptor is closed: admission must never shut down a reused one.
            self.admission.release(ticket)
            self.shutdown_request(connection)

    def _handshake(self, request: socket.socket, client_address,
                   ticket: Ticket) -> tuple[socket.socket, bool]:
        """The socket that now owns the connection (the TLS one once wrapped) and whether the
        handshake verified the client's certificate."""
        connection = request
        # A socket timeout bounds ssl's whole do_handshake, not each read: a deadline.
        request.settimeout(HANDSHAKE_DEADLINE_S)
        try:
            # Responses go out in several small writes (TLS records); without NODELAY, Nagle
            # and delayed ACKs add ~40 ms to every request.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self.server_tls.context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            connection.do_handshake()
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            if not ticket.evicted:  # counted when it was cut
                reason = ("TLS handshake timed out" if isinstance(exc, TimeoutError)
                          else "TLS handshake failed")
                self.refusals.refused(client_address[0], reason, str(exc))
            return connection, False
        connection.settimeout(None)
        return connection, True

    def _turn_away(self, tls: socket.socket, client_address, ticket: Ticket) -> None:
        """An authenticated client with no place (over the limit, or cut as its handshake
        ended): 503, which the driver retries."""
        if not ticket.evicted:  # counted when it was cut
            self.refusals.refused(client_address[0], "too many authenticated connections",
                                  "answered 503")
        body = error_body("Service Unavailable", "too many connections; retry")
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        tls.settimeout(HANDSHAKE_DEADLINE_S)
        with contextlib.suppress(OSError):
            tls.sendall(head + body)

    def handle_error(self, request, client_address) -> None:
        # A client that goes away is routine; anything else is the agent's fault and must be
        # seen (a bad socket timeout once failed every connection, logged at DEBUG only).
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | ssl.SSLError):
            LOG.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            LOG.exception("connection from %s failed", client_address)
