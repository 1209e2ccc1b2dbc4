"""The HTTPS server: mutual TLS, with the handshake done off the accept loop.

werkzeug's own TLS support wraps the listening socket, so the handshake of every client runs in
the accepting thread and one slow or hostile client stalls everyone. Here the listening socket
stays plain; each accepted connection gets its own thread, which performs the handshake under a
timeout and only then hands the TLS socket to the WSGI handler. A client without a certificate
chaining to the CA fails the handshake and never reaches a handler. Refused connections are
logged through refusal_log.py.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from pathlib import Path

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from amphora_agent.refusal_log import RefusalLog

LOG = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 128


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


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        LOG.info('%s "%s" %s %s', self.address_string(), self.requestline, code, size)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """Requests too broken to reach the app (bad request line, oversized headers) get the
        API's JSON error body too, instead of http.server's HTML page."""
        self.close_connection = True
        body = json.dumps({"message": message or HTTPStatus(code).phrase,
                           "details": explain or ""}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


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
        handler = type("AgentHandler", (_QuietHandler,), {"timeout": read_timeout})
        super().__init__(host, port, app, handler=handler)
        self.server_tls = server_tls
        # Set after the base class ran, so the listening socket stays plain (see module doc);
        # werkzeug only reads it to report wsgi.url_scheme = https.
        self.ssl_context = server_tls.context
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refusals = RefusalLog()

    def service_actions(self) -> None:
        # Called by serve_forever at least every poll interval (half a second).
        self.refusals.flush()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refusals.refused(client_address[0], "too many connections", "dropped")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            tls = self._handshake(request, client_address)
            if tls is None:
                return
            try:
                self.finish_request(tls, client_address)
            except Exception:
                self.handle_error(tls, client_address)
            finally:
                self.shutdown_request(tls)
        finally:
            self._slots.release()

    def _handshake(self, request: socket.socket, client_address) -> ssl.SSLSocket | None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            # Responses go out in several small writes (TLS records); without NODELAY, Nagle
            # and delayed ACKs add ~40 ms to every request.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.server_tls.context.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            tls.do_handshake()
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            reason = ("TLS handshake timed out" if isinstance(exc, TimeoutError)
                      else "TLS handshake failed")
            self.refusals.refused(client_address[0], reason, str(exc))
            self.shutdown_request(request)
            return None
        tls.settimeout(None)
        return tls

    def handle_error(self, request, client_address) -> None:
        # A client that goes away is routine; anything else is the agent's fault and must be
        # seen (a bad socket timeout once failed every connection, logged at DEBUG only).
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | ssl.SSLError):
            LOG.debug("connection from %s ended with an error", client_address, exc_info=True)
        else:
            LOG.exception("connection from %s failed", client_address)
