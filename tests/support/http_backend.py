"""A small HTTP server on loopback for a local agent's haproxy to forward to: every GET answers
"backend PORT", and `?delay=seconds` answers that late (at most 10 s)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

MAX_DELAY_S = 10.0


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        delay = min(float(query.get("delay", ["0"])[0]), MAX_DELAY_S)
        if delay:
            time.sleep(delay)
        body = f"backend {self.server.server_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


class HttpBackend(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # haproxy closing an idle keep-alive connection on reload is not an error

    @property
    def port(self) -> int:
        return self.server_address[1]


@contextlib.contextmanager
def serving_http_backend() -> Iterator[HttpBackend]:
    """An HttpBackend on 127.0.0.1 serving from a thread for as long as the context lasts."""
    server = HttpBackend(("127.0.0.1", 0), _BackendHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
