"""Hostile requests, many of them: the agent answers each with a JSON status, survives, and leaves
no temp file and nothing outside its own directories. Deterministic (seeded), bounded."""

from __future__ import annotations

import os
import random
import re
import uuid

import requests

from harness.amphora_api.client import AmphoraClient

REQUESTS = 600
PATHS = (
    "/1.0/loadbalancer/{a}/{x}/haproxy", "/1.0/loadbalancer/{x}/haproxy",
    "/1.0/loadbalancer/{x}/{y}", "/1.0/listeners/{x}", "/1.0/loadbalancer/{x}/certificates/{y}",
    "/1.0/certificate", "/1.0/plug/vip/{x}", "/1.0/plug/network", "/1.0/interface/{x}",
    "/1.0/vrrp/upload", "/1.0/vrrp/{x}", "/1.0/config", "/1.0/details", "/1.0/listeners",
    "/{x}", "/1.0/{x}/{y}",
)
WORDS = ("", "..", "../../etc/passwd", "%2e%2e%2f", "a" * 300, "%00", "x.pem", "../x.pem",
         "1.2.3.4", "::1", "start", "stop", "reload", "ü", "con.pem;rm", "*", "~")
BODIES = (b"", b"{", b"[]", b'{"mac_address": 5}', b"\xff\xfe\x00garbage",
          b'{"subnet_cidr": "x", "gateway": "y", "mac_address": "z"}',
          b"global\n    daemon\n", b"-----BEGIN CERTIFICATE-----\nnope\n", b"x" * 5000)
# The contract's 500 rows: agent config rejected, keepalived/haproxy actions that fail, plug
# errors. Anything else answering 5xx is a defect.
CONTRACT_500 = re.compile(r"^/1\.0/(config|vrrp/\w+|loadbalancer/[0-9a-f-]{36}/\w+|plug/.*)$")


def test_hostile_requests_get_json_answers_and_harm_nothing(agent_factory):
    agent = agent_factory()
    client: AmphoraClient = agent.client
    before = set(os.listdir(agent.directory))
    rng = random.Random(20261127)
    ids = [agent.amphora_id, str(uuid.uuid4()), str(uuid.uuid4())]
    for _ in range(REQUESTS):
        path = rng.choice(PATHS).format(a=rng.choice(ids + list(WORDS)),
                                        x=rng.choice(ids + list(WORDS)), y=rng.choice(WORDS))
        method = rng.choice(("GET", "PUT", "POST", "DELETE", "PATCH"))
        response = client._session.request(method, client.base_url + path,
                                           data=rng.choice(BODIES), timeout=30)
        where = f"{method} {path} -> {response.status_code}"
        if response.status_code >= 400:
            assert "message" in response.json(), where
        if response.status_code >= 500:
            assert response.status_code == 500 and CONTRACT_500.match(
                requests.utils.unquote(path)), f"{where}: {response.text[:200]}"
    assert agent.process.poll() is None, "the agent died"
    assert client.get_info()["uuid"] == agent.amphora_id
    assert list(agent.base_path.rglob("*.tmp")) == []
    assert set(os.listdir(agent.directory)) == before  # nothing written beside its directories
