"""The driver's client keeps a connection to an amphora that keeps it alive: calls after the
first reuse it, with no new TCP + TLS handshake (a stand-in HTTP/1.1 server over mutual TLS
with the lab PKI; the agent's own keep-alive is tested with the agent)."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import LabPKI

AMPHORA_ID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
CALLS = 5


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a side says close
    connections: list[int] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_GET(self) -> None:
        body = json.dumps({"api_version": "1.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


def test_calls_reuse_one_kept_alive_connection(tmp_path: Path) -> None:
    pki = LabPKI(tmp_path)
    credentials = pki.amphora(AMPHORA_ID)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(credentials.server_pem))
    tls.load_verify_locations(str(credentials.ca))
    tls.verify_mode = ssl.CERT_REQUIRED
    handler = type("Handler", (_Counting,), {"connections": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with AmphoraClient("127.0.0.1", server.server_address[1], AMPHORA_ID, pki.driver,
                           retries=1) as client:
            answers = [client.version() for _ in range(CALLS)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert answers == [{"api_version": "1.0"}] * CALLS
    assert len(handler.connections) == 1
