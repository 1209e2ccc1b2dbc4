"""HTTP/1.1 persistent connections: a controller's session makes many calls over one TLS
connection; idle ones are closed after a timeout, and only so many may wait at once."""

from __future__ import annotations

import http.client
import select
import ssl
import uuid

import pytest

from amphora_agent.admission import MAX_IDLE
from amphora_agent.http_connection import IDLE_TIMEOUT_S
from harness.polling import poll_until

LIMIT = 4096


def driver_context(pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_path))
    context.check_hostname = False
    context.load_cert_chain(str(pki.driver.client_pem))
    return context


def connect(agent, pki) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(agent.host, agent.port, timeout=30,
                                       context=driver_context(pki))


def call(connection: http.client.HTTPSConnection, method: str, path: str,
         body=None, headers=None) -> http.client.HTTPResponse:
    headers = headers or {}
    connection.request(method, path, body=body, headers=headers,
                       encode_chunked="Transfer-Encoding" in headers)
    response = connection.getresponse()
    response.read()
    return response


def closed_by_the_agent(sock) -> bool:
    """The agent closed this connection (it reads as the end of the stream)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True


def test_a_session_of_calls_uses_one_connection(agent_factory, lb_config, pki):
    agent = agent_factory()
    lb = lb_config(agent, backend_port=9)
    connection = connect(agent, pki)
    assert call(connection, "GET", "/").status == 200
    sock = connection.sock
    upload = f"/1.0/loadbalancer/{agent.amphora_id}/{lb.lb_id}/haproxy"
    answers = [
        call(connection, "PUT", upload, body=lb.text.encode()),
        # A chunked body: its last chunk ends the request, and the next one follows.
        call(connection, "PUT", upload, body=iter([lb.text.encode()]),
             headers={"Transfer-Encoding": "chunked"}),
        call(connection, "GET", f"/1.0/loadbalancer/{lb.lb_id}/haproxy"),
        call(connection, "HEAD", "/1.0/info"),
        call(connection, "GET", "/1.0/no-such-thing"),
        call(connection, "DELETE", f"/1.0/listeners/{lb.lb_id}"),
    ]
    assert [answer.status for answer in answers] == [202, 202, 200, 200, 404, 200]
    assert all(answer.getheader("Connection") == "keep-alive" for answer in answers)
    assert connection.sock is sock  # never reconnected
    connection.close()


def test_a_body_the_agent_did_not_read_closes_the_connection(agent_factory, pki):
    """An upload refused for its size before it was read: the answer still reaches the client,
    and the connection is not used for another request (the rest of the body is in it)."""
    agent = agent_factory(max_request_body_bytes=LIMIT)
    connection = connect(agent, pki)
    refused = call(connection, "PUT", f"/1.0/loadbalancer/{uuid.uuid4()}/certificates/x.pem",
                   body=b"x" * (1024 * 1024))
    assert refused.status == 413
    assert refused.getheader("Connection") == "close"
    assert connection.sock is None  # http.client closed it as told
    assert call(connection, "GET", "/").status == 200  # on a new connection
    connection.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(agent_factory, pki):
    agent = agent_factory()
    connection = connect(agent, pki)
    assert call(connection, "GET", "/").status == 200
    assert poll_until(lambda: closed_by_the_agent(connection.sock), 3 * IDLE_TIMEOUT_S)
    connection.close()


def test_idle_connections_are_bounded_the_oldest_closed_first(agent_factory, pki):
    agent = agent_factory()
    extra = 4
    connections = [connect(agent, pki) for _ in range(MAX_IDLE + extra)]
    for connection in connections:  # each goes idle after its answer, in this order
        assert call(connection, "GET", "/").status == 200
    oldest, newest = connections[:extra], connections[extra:]
    assert poll_until(lambda: all(closed_by_the_agent(c.sock) for c in oldest), IDLE_TIMEOUT_S)
    assert not any(closed_by_the_agent(c.sock) for c in newest)
    for connection in connections:
        connection.close()


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.0\r\n\r\n",
                                          b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"])
def test_clients_that_ask_to_close_get_their_connection_closed(agent_factory, pki,
                                                               request_line):
    agent = agent_factory()
    connection = connect(agent, pki)
    connection.connect()
    connection.sock.sendall(request_line)
    received = b""
    while chunk := connection.sock.recv(65536):  # ends when the agent closes
        received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"Connection: close" in received
    connection.close()


def test_a_server_certificate_rotation_closes_its_connection(agent_factory, pki):
    """The connection that carried the rotation speaks with the old certificate; the client's
    next call must meet the new one."""
    agent = agent_factory()
    connection = connect(agent, pki)
    assert call(connection, "GET", "/").status == 200
    before = connection.sock.getpeercert()["serialNumber"]
    rotated = call(connection, "PUT", "/1.0/certificate",
                   body=pki.ca.issue_amphora(agent.amphora_id).bundle)
    assert rotated.status == 202 and rotated.getheader("Connection") == "close"
    assert call(connection, "GET", "/").status == 200
    assert connection.sock.getpeercert()["serialNumber"] != before
    connection.close()
