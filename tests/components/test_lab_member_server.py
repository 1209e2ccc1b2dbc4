"""The lab's test backend (harness.lab.member_server), run as a host process on loopback."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness.amphora_api.pki import LabPKI
from harness.lab import member_server

MEMBER_ID = "member-under-test"
LOOPBACK = "127.0.0.1"


@dataclass
class RunningMember:
    process: subprocess.Popen
    ports: dict[str, int]
    ca: Path

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{LOOPBACK}:{self.ports[scheme]}{path}"


@pytest.fixture
def member(tmp_path: Path) -> Iterator[RunningMember]:
    pki = LabPKI(tmp_path / "pki")
    pem = tmp_path / "tls.pem"
    pem.write_bytes(pki.ca.issue(MEMBER_ID).bundle)
    process = subprocess.Popen(
        [sys.executable, member_server.__file__, "--id", MEMBER_ID, "--bind", LOOPBACK,
         "--http-port", "0", "--https-port", "0", "--tcp-port", "0", "--udp-port", "0",
         "--tls-pem", str(pem)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = json.loads(process.stdout.readline())
        yield RunningMember(process, ready["ports"], pki.ca_path)
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        yield session


def test_http_answers_with_its_id_and_the_client_it_saw(member: RunningMember,
                                                        http_session: requests.Session) -> None:
    response = http_session.get(member.url("/some/path?x=1"),
                                headers={"X-Forwarded-For": "192.0.2.7"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["X-Member-Id"] == MEMBER_ID
    body = response.json()
    assert body["member"] == MEMBER_ID
    assert body["client"] == LOOPBACK
    assert body["path"] == "/some/path"
    assert body["method"] == "GET"
    assert body["forwarded_for"] == "192.0.2.7"


def test_keep_alive_serves_several_requests_on_one_connection(
        member: RunningMember, http_session: requests.Session) -> None:
    ports = {http_session.get(member.url(), timeout=5).json()["client_port"] for _ in range(3)}
    assert len(ports) == 1


def test_status_knob(member: RunningMember, http_session: requests.Session) -> None:
    response = http_session.get(member.url(), params={"status": "503"}, timeout=5)
    assert response.status_code == 503
    assert response.json()["member"] == MEMBER_ID


def test_delay_knob_delays_the_answer(member: RunningMember,
                                      http_session: requests.Session) -> None:
    started = time.monotonic()
    response = http_session.get(member.url(), params={"delay": "0.3"}, timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("query", ["delay=soon", "delay=-1", "delay=1000", "status=99",
                                   "status=600", "status=abc"])
def test_bad_knobs_are_refused(member: RunningMember, http_session: requests.Session,
                               query: str) -> None:
    response = http_session.get(member.url(f"/?{query}"), timeout=5)
    assert response.status_code == 400
    assert "error" in response.json()


def test_request_bodies_are_read_and_the_connection_goes_on(
        member: RunningMember, http_session: requests.Session) -> None:
    first = http_session.post(member.url(), data=b"x" * 10000, timeout=5)
    second = http_session.get(member.url(), timeout=5)
    assert first.json()["method"] == "POST"
    assert first.json()["client_port"] == second.json()["client_port"]


def test_head_has_no_body(member: RunningMember, http_session: requests.Session) -> None:
    response = http_session.head(member.url(), timeout=5)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["X-Member-Id"] == MEMBER_ID


def test_https_presents_the_certificate_it_was_given(member: RunningMember) -> None:
    context = ssl.create_default_context(cafile=str(member.ca))
    context.check_hostname = False  # the certificate names the member, not 127.0.0.1
    connection = http.client.HTTPSConnection(LOOPBACK, member.ports["https"], context=context,
                                             timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = json.loads(response.read())
        peer = connection.sock.getpeercert()
    finally:
        connection.close()
    assert response.status == 200
    assert body["member"] == MEMBER_ID
    assert ((("commonName", MEMBER_ID),) in peer["subject"])


def test_tcp_answers_its_id_then_closes(member: RunningMember) -> None:
    with socket.create_connection((LOOPBACK, member.ports["tcp"]), timeout=5) as conn:
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    answer = json.loads(data)
    assert answer["member"] == MEMBER_ID
    assert answer["proto"] == "tcp"
    assert answer["client"] == LOOPBACK


def test_udp_answers_every_datagram_with_its_id(member: RunningMember) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for _ in range(2):
            sock.sendto(b"who?", (LOOPBACK, member.ports["udp"]))
            answer = json.loads(sock.recv(4096))
            assert answer["member"] == MEMBER_ID
            assert answer["proto"] == "udp"
            assert answer["client_port"] == sock.getsockname()[1]


def test_sigterm_stops_it_cleanly(member: RunningMember) -> None:
    member.process.send_signal(signal.SIGTERM)
    assert member.process.wait(10) == 0
