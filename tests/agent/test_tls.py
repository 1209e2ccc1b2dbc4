"""Mutual TLS: who gets an answer from the agent and whom the client accepts; and that no
request, however malformed, brings the agent down."""

from __future__ import annotations

import json
import socket
import ssl
import uuid

import pytest
import requests

from harness.amphora_api.client import AmphoraAPIError, AmphoraClient
from harness.amphora_api.pki import LabPKI
from harness.polling import poll_until


def attempt(port: int, context: ssl.SSLContext | None, request: bytes) -> bytes:
    """Send request (over TLS when context is given) and return what came back before the
    connection ended; a TLS failure counts as nothing."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            sock = context.wrap_socket(raw) if context else raw
            sock.sendall(request)
            while chunk := sock.recv(65536):
                received += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    return received


def upload_request(agent, lb_id: str) -> bytes:
    body = b"global\n    daemon\n"
    return (f"PUT /1.0/loadbalancer/{agent.amphora_id}/{lb_id}/haproxy HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode() + body


def driver_context(ca_path, client_pem=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_path))
    context.check_hostname = False
    if client_pem is not None:
        context.load_cert_chain(str(client_pem))
    return context


def wait_for_log(agent, text: str, timeout: float = 10.0) -> None:
    assert poll_until(lambda: text in agent.log(), timeout), f"{text!r} not logged:\n{agent.log()}"


def assert_no_handler_ran(agent, lb_id: str) -> None:
    assert not (agent.base_path / lb_id).exists()
    assert f"/{lb_id}/haproxy" not in agent.log()
    assert agent.process.poll() is None


def test_the_driver_certificate_gets_answers(agent_factory, pki):
    agent = agent_factory()
    answer = attempt(agent.port, driver_context(pki.ca_path, pki.driver.client_pem),
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"api_version"' in answer


@pytest.mark.parametrize("who", ["no-certificate", "other-ca", "plain-http"])
def test_clients_without_a_trusted_certificate_get_no_answer(agent_factory, pki, tmp_path,
                                                             who):
    agent = agent_factory()
    lb_id = str(uuid.uuid4())
    if who == "no-certificate":
        context = driver_context(pki.ca_path)
    elif who == "other-ca":
        other = LabPKI(tmp_path / "other")
        context = driver_context(pki.ca_path, other.driver.client_pem)
    else:
        context = None
    assert attempt(agent.port, context, upload_request(agent, lb_id)) == b""
    wait_for_log(agent, "refused a connection from")
    assert_no_handler_ran(agent, lb_id)


def test_client_rejects_a_server_certificate_with_another_cn(agent_factory, pki):
    other_amphora = str(uuid.uuid4())
    server_pem = pki.directory / "impostor.pem"
    server_pem.write_bytes(pki.ca.issue(other_amphora).bundle)  # same CA, another CN
    agent = agent_factory(server_pem=server_pem)
    lb_id = str(uuid.uuid4())
    with pytest.raises(requests.exceptions.SSLError, match="is not the amphora id"):
        agent.client.upload_config(lb_id, "global\n    daemon\n")
    assert_no_handler_ran(agent, lb_id)
    # The same check passes when the client expects the CN the server has.
    with AmphoraClient("127.0.0.1", agent.port, other_amphora, pki.driver) as client:
        assert client.version() == {"api_version": "1.0"}


def test_client_rejects_a_server_certificate_from_another_ca(agent_factory, pki, tmp_path):
    amphora_id = str(uuid.uuid4())
    server_pem = tmp_path / "foreign.pem"  # right CN, foreign CA
    server_pem.write_bytes(LabPKI(tmp_path / "other").ca.issue(amphora_id).bundle)
    agent = agent_factory(amphora_id=amphora_id, server_pem=server_pem)
    with pytest.raises(requests.exceptions.SSLError, match="certificate verify failed"):
        agent.client.get_info()


def test_bound_to_the_configured_address_only(agent_factory):
    agent = agent_factory()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.2", agent.port)) != 0
    assert agent.client.version() == {"api_version": "1.0"}


def test_unknown_paths_and_methods_get_json_errors(agent_factory):
    client = agent_factory().client
    with pytest.raises(AmphoraAPIError) as caught:
        client.request("GET", "/1.0/nothing-here")
    assert caught.value.status == 404
    with pytest.raises(AmphoraAPIError) as caught:
        client.request("POST", "/1.0/info")
    assert caught.value.status == 405


MALFORMED = [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n",
    b"PUT /1.0/loadbalancer/%00/%ff/haproxy HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"PUT /1.0/certificate HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"PUT /1.0/certificate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"PUT /1.0/loadbalancer/" + str(uuid.uuid4()).encode() + b"/certificates/\xff\xfe.pem "
    b"HTTP/1.1\r\nContent-Length: 3\r\n\r\n\xff\xfe\x00",
    b"DELETE /1.0/listeners/../../../../etc HTTP/1.1\r\n\r\n",
]


def test_malformed_requests_never_crash_the_agent(agent_factory, pki):
    agent = agent_factory()
    context = driver_context(pki.ca_path, pki.driver.client_pem)
    for request in MALFORMED:
        answer = attempt(agent.port, context, request)
        assert agent.process.poll() is None, request[:60]
        body = answer
        if answer.startswith(b"HTTP/"):  # else an HTTP/0.9 answer to a garbled request line
            head, _, body = answer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            # 505 is the one 5xx: an HTTP version nobody speaks.
            assert 400 <= status < 500 or status == 505, (request[:60], answer[:200])
        assert json.loads(body)["message"], request[:60]
    assert agent.client.version() == {"api_version": "1.0"}
    assert not list(agent.directory.rglob("*.pem"))


def test_a_body_cut_short_stores_nothing(agent_factory, lb_config, http_backend, pki):
    """The client announces more than it sends, then goes away: nothing is stored, even though
    what did arrive is a complete, valid config; and the agent carries on."""
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    body = lb.text.encode()
    head = (f"PUT /1.0/loadbalancer/{agent.amphora_id}/{lb.lb_id}/haproxy HTTP/1.1\r\n"
            f"Host: x\r\nContent-Length: {len(body) + 100}\r\n\r\n").encode()
    context = driver_context(pki.ca_path, pki.driver.client_pem)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(head + body)
    # The agent notices the disconnect (and logs its answer to it), then stored nothing.
    wait_for_log(agent, f'/{lb.lb_id}/haproxy HTTP/1.1" 400')
    assert agent.client.version() == {"api_version": "1.0"}
    assert not (agent.base_path / lb.lb_id / "haproxy.cfg").exists()
    assert not list(agent.directory.rglob("*.tmp"))


def test_client_trusts_the_lab_ca_alone_however_many_connections(agent_factory, pki,
                                                                  monkeypatch, tmp_path):
    # An environment bundle must not widen trust either.
    foreign = LabPKI(tmp_path / "foreign")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(foreign.ca_path))
    agent = agent_factory()
    for _ in range(3):  # three connections, three handshakes
        agent.client.get_info()
        agent.client.close()
    context = agent.client._session.get_adapter(agent.client.base_url)._tls
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("organizationName", "amphora-harness"),), (("commonName", "amphora-harness lab CA"),))
    ]
