"""harness.amphora_api.client on its own: the amphora-id check, retries and error reporting,
against a
scripted HTTPS server speaking real mutual TLS (and a real agent for the restart case)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import uuid
from collections.abc import Iterator

import pytest
import requests

from harness.amphora_api.client import AmphoraAPIError, AmphoraClient


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Answers requests with the next (status, content type, body) of its script; the last
    entry repeats. Records every request path."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, script: list[tuple[int, str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.script = script
        self.paths: list[str] = []

    def handle_error(self, request, client_address) -> None:
        pass  # clients that reject our certificate hang up mid-handshake

    def next_answer(self, path: str) -> tuple[int, str, bytes]:
        self.paths.append(path)
        return self.script[min(len(self.paths), len(self.script)) - 1]


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status, content_type, body = self.server.next_answer(self.path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", "e")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *_args) -> None:
        pass


def json_answer(status: int, **body) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


@pytest.fixture
def scripted(pki) -> Iterator:
    """scripted(script, common_name=None, dns_names=()) -> (server, amphora_id)"""
    servers: list[ScriptedServer] = []

    def start(script, common_name: str | None = None, dns_names: tuple[str, ...] = ()):
        amphora_id = str(uuid.uuid4())
        issued = pki.ca.issue(common_name or amphora_id, dns_names=dns_names)
        pem = pki.directory / f"scripted-{len(servers)}.pem"
        pem.write_bytes(issued.bundle)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pem))
        context.load_verify_locations(str(pki.ca_path))
        context.verify_mode = ssl.CERT_REQUIRED
        server = ScriptedServer(context, script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, amphora_id

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_for(server, amphora_id, pki, **options) -> AmphoraClient:
    options = {"retries": 5, "retry_interval": 0.01, "retry_deadline": 10.0, **options}
    return AmphoraClient("127.0.0.1", server.server_address[1], amphora_id, pki.driver,
                         **options)


def test_cn_is_checked_not_the_subject_alternative_names(scripted, pki):
    ok = json_answer(200, api_version="1.0")
    # CN is the amphora id; a SAN names something else: accepted.
    server, amphora_id = scripted([ok], dns_names=("somewhere.example",))
    with client_for(server, amphora_id, pki) as client:
        assert client.version() == {"api_version": "1.0"}
    # A SAN names the amphora id but the CN does not: rejected, before any request is sent.
    amphora_id = str(uuid.uuid4())
    server, _ = scripted([ok], common_name="someone-else", dns_names=(amphora_id,))
    with client_for(server, amphora_id, pki) as client, pytest.raises(
            requests.exceptions.SSLError, match="is not the amphora id"):
        client.version()
    assert server.paths == []


def test_not_ready_answers_are_retried(scripted, pki):
    server, amphora_id = scripted([
        json_answer(503, message="Service Unavailable"),
        (404, "text/html", b"<html>starting</html>"),
        json_answer(404, message="Not Found", details="No suitable network interface found"),
        json_answer(202, message="OK", details="VIP 203.0.113.5 plugged on interface eth1"),
    ])
    with client_for(server, amphora_id, pki) as client:
        answer = client.plug_vip("203.0.113.5", {"subnet_cidr": "203.0.113.0/24",
                                                 "gateway": "203.0.113.1",
                                                 "mac_address": "fa:16:3e:00:00:01"})
    assert answer["details"] == "VIP 203.0.113.5 plugged on interface eth1"
    assert server.paths == ["/1.0/plug/vip/203.0.113.5"] * 4


def test_retries_are_bounded_and_end_in_the_last_answer(scripted, pki):
    server, amphora_id = scripted([json_answer(503, message="Topology transition in progress")])
    with client_for(server, amphora_id, pki, retries=4) as client, pytest.raises(
            AmphoraAPIError) as caught:
        client.get_details()
    assert (caught.value.status, caught.value.message) == (503, "Topology transition in progress")
    assert len(server.paths) == 4


def test_errors_are_not_retried_and_carry_status_message_details(scripted, pki):
    server, amphora_id = scripted([
        json_answer(404, message="Loadbalancer Not Found", details="No loadbalancer with UUID: x"),
    ])
    with client_for(server, amphora_id, pki) as client, pytest.raises(
            AmphoraAPIError) as caught:
        client.get_config("x")
    error = caught.value
    assert (error.status, error.message, error.details) == (
        404, "Loadbalancer Not Found", "No loadbalancer with UUID: x")
    assert server.paths == ["/1.0/loadbalancer/x/haproxy"]

    server, amphora_id = scripted([(500, "text/plain", b"boom")])
    with client_for(server, amphora_id, pki) as client, pytest.raises(
            AmphoraAPIError) as caught:
        client.reload("x")
    assert (caught.value.status, caught.value.details) == (500, "boom")


def test_every_endpoint_has_its_path(scripted, pki):
    ok = json_answer(200, message="OK", interface="eth1", md5sum="m")
    server, amphora_id = scripted([ok])
    lb, name = "lb", "c.pem"
    with client_for(server, amphora_id, pki) as client:
        client.version()
        client.get_info()
        client.get_info(prefixed=False)
        client.get_details()
        client.get_listeners()
        client.upload_config(lb, "cfg")
        client.get_config(lb)
        client.start(lb)
        client.stop(lb)
        client.reload(lb)
        client.delete_lb(lb)
        client.upload_cert(lb, name, b"pem")
        assert client.get_cert_md5(lb, name) == "m"
        client.delete_cert(lb, name)
        client.rotate_server_cert(b"pem")
        client.plug_vip("203.0.113.5", {})
        client.plug_network({})
        assert client.get_interface("203.0.113.5") == "eth1"
        client.upload_vrrp_config("conf")
        client.vrrp_action("start")
        client.update_agent_config("ini")
    assert server.paths == [
        "/", "/1.0/info", "/info", "/1.0/details", "/1.0/listeners",
        f"/1.0/loadbalancer/{amphora_id}/lb/haproxy", "/1.0/loadbalancer/lb/haproxy",
        "/1.0/loadbalancer/lb/start", "/1.0/loadbalancer/lb/stop",
        "/1.0/loadbalancer/lb/reload", "/1.0/listeners/lb",
        "/1.0/loadbalancer/lb/certificates/c.pem", "/1.0/loadbalancer/lb/certificates/c.pem",
        "/1.0/loadbalancer/lb/certificates/c.pem", "/1.0/certificate",
        "/1.0/plug/vip/203.0.113.5", "/1.0/plug/network", "/1.0/interface/203.0.113.5",
        "/1.0/vrrp/upload", "/1.0/vrrp/start", "/1.0/config",
    ]


def test_connection_errors_are_retried_until_the_agent_is_back(agent_factory, pki):
    agent = agent_factory()
    agent.kill()
    restarter = threading.Timer(0.5, agent.start)
    restarter.start()
    try:
        with AmphoraClient("127.0.0.1", agent.port, agent.amphora_id, pki.driver,
                           retries=200, retry_interval=0.05, retry_deadline=30) as client:
            assert client.get_info()["uuid"] == agent.amphora_id
    finally:
        restarter.join(30)


def test_connection_errors_give_up_after_the_bound(free_port, pki):
    with AmphoraClient("127.0.0.1", free_port(), str(uuid.uuid4()), pki.driver, retries=3,
                       retry_interval=0.01) as client, pytest.raises(
            requests.exceptions.ConnectionError):
        client.version()
