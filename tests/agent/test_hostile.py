"""The agent under attack, round two: each case is one way a client without a certificate, or a
careless controller, could lock the agent, brick it, or tear its state; against a real agent
process with the lab PKI on 127.0.0.1."""

from __future__ import annotations

import configparser
import io
import time
import uuid

import pytest

from harness.amphora_api.client import AmphoraAPIError
from harness.observe.heartbeats import HeartbeatReceiver

KEY = "hostile-heartbeat-key"
FAST_INTERVAL_S = 0.3
CONFIG_ERROR = "Unable to update amphora-agent configuration."
MIB = 1024 * 1024


def with_option(config_text: str, section: str, option: str, value: str) -> str:
    """The agent's INI text with one option set."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(config_text)
    parser[section][option] = value
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


# --- 2: an interval no timer can wait must not stop the heartbeats ------------------------------


def test_a_heartbeat_interval_too_long_to_wait_is_refused_and_heartbeats_go_on(agent_factory):
    with HeartbeatReceiver(KEY) as receiver:
        host, port = receiver.address
        agent = agent_factory(controllers=[f"{host}:{port}"], heartbeat_interval=FAST_INTERVAL_S,
                              heartbeat_key=KEY)
        receiver.wait_for(agent.amphora_id, count=1, timeout=20)
        original = agent.config_path.read_text()
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.update_agent_config(
                with_option(original, "health_manager", "heartbeat_interval", "1e10"))
        assert (caught.value.status, caught.value.message) == (500, CONFIG_ERROR)
        assert "heartbeat_interval" in caught.value.details
        assert agent.config_path.read_text() == original
        pushed_at = time.time()
        receiver.wait_for(agent.amphora_id, count=3, after=pushed_at, timeout=20)


# --- 8: malformed bodies get 4xx, chunked bodies the same limit as sized ones -------------------

def chunked(data: bytes, size: int = 64 * 1024):
    """data as a generator: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


NESTED = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_a_400(agent_factory):
    agent = agent_factory()
    # 127.0.0.1 is on lo: without a data-plane namespace the agent finds that interface and
    # goes on to read the rules.
    for method, path in (("POST", "/1.0/plug/network"), ("POST", "/1.0/plug/vip/192.0.2.10"),
                         ("PUT", "/1.0/interface/127.0.0.1/rules")):
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.request(method, path, data=NESTED)
        assert caught.value.status == 400, (path, caught.value)
    assert agent.client.version() == {"api_version": "1.0"}


@pytest.mark.parametrize("length", [242, 255])
def test_certificate_names_up_to_255_characters_are_stored(agent_factory, pki, length):
    agent = agent_factory()
    lb_id = str(uuid.uuid4())
    name = "c" * (length - len(".pem")) + ".pem"
    pem = pki.ca.issue(str(uuid.uuid4())).bundle
    etag = agent.client.upload_cert(lb_id, name, pem)
    assert agent.client.get_cert_md5(lb_id, name) == etag
    assert (agent.cert_dir / lb_id / name).read_bytes() == pem
    agent.client.delete_cert(lb_id, name)
    assert not (agent.cert_dir / lb_id / name).exists()
    assert not list(agent.directory.rglob("*.tmp"))


def test_a_certificate_name_longer_than_a_file_name_is_a_400(agent_factory, pki):
    agent = agent_factory()
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.upload_cert(str(uuid.uuid4()), "c" * 252 + ".pem",
                                 pki.ca.issue(str(uuid.uuid4())).bundle)
    assert caught.value.status == 400


def test_a_chunked_json_body_over_the_limit_is_a_413(agent_factory):
    """A valid plug request padded with white space beyond the default 16 MiB limit."""
    agent = agent_factory()
    request = b'{"mac_address": "02:00:00:00:00:99", "fixed_ips": []}'
    body = request + b" " * (17 * MIB - len(request))
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.request("POST", "/1.0/plug/network", data=chunked(body))
    assert caught.value.status == 413


LIMIT = 4096


def padded(text: str, size: int) -> bytes:
    """text with a comment that makes it exactly size bytes."""
    data = text.encode() + b"# "
    return data + b"x" * (size - len(data) - 1) + b"\n"


@pytest.mark.parametrize(("size", "status"), [(LIMIT, 202), (LIMIT + 1, 413)])
def test_chunked_bodies_are_limited_exactly_like_sized_ones(agent_factory, lb_config, size,
                                                           status):
    agent = agent_factory(max_request_body_bytes=LIMIT)
    lb = lb_config(agent, backend_port=9)
    body = padded(lb.text, size)
    path = f"/1.0/loadbalancer/{agent.amphora_id}/{lb.lb_id}/haproxy"
    for data in (body, chunked(body, 1000)):
        try:
            answer = agent.client.request("PUT", path, data=data).status_code
        except AmphoraAPIError as exc:
            answer = exc.status
        assert answer == status, "chunked" if data is not body else "sized"
