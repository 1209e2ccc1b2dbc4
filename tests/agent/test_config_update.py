"""PUT /1.0/config: heartbeat interval, key and controllers change without a restart; a bad file
changes nothing. Checked by what a real UDP receiver gets from a real agent."""

from __future__ import annotations

import configparser
import io
import time

import pytest

from harness.amphora_api.client import AmphoraAPIError
from harness.observe.heartbeats import HeartbeatReceiver

OLD_KEY, NEW_KEY = "old-heartbeat-key", "new-heartbeat-key"
ERROR = "Unable to update amphora-agent configuration."
SLOW_INTERVAL_S = 600.0
FAST_INTERVAL_S = 0.3


def with_options(config_text: str, **options: tuple[str, str]) -> str:
    """The INI text with options replaced: name=(section, value)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(config_text)
    for name, (section, value) in options.items():
        parser[section][name] = value
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


@pytest.fixture
def receivers():
    with HeartbeatReceiver(OLD_KEY) as old, HeartbeatReceiver(NEW_KEY) as new:
        yield old, new


@pytest.fixture
def agent(agent_factory, receivers):
    old, _ = receivers
    host, port = old.address
    # A very slow interval: the one heartbeat sent at start, then silence unless changed.
    return agent_factory(controllers=[f"{host}:{port}"], heartbeat_interval=SLOW_INTERVAL_S,
                         heartbeat_key=OLD_KEY)


def test_heartbeat_options_apply_without_restart(agent, receivers):
    old, new = receivers
    old.wait_for(agent.amphora_id, count=1, timeout=20)
    host, port = new.address
    text = with_options(agent.config_path.read_text(),
                        controller_ip_port_list=("health_manager", f"{host}:{port}"),
                        heartbeat_key=("health_manager", NEW_KEY),
                        heartbeat_interval=("health_manager", str(FAST_INTERVAL_S)))
    pid = agent.process.pid
    assert agent.client.update_agent_config(text) == {"message": "OK"}
    changed_at = time.time()
    # Several heartbeats at the new rate, to the new controller, signed with the new key.
    beats = new.wait_for(agent.amphora_id, count=5, after=changed_at, timeout=20)
    assert new.dropped == []
    assert beats[0].seq > old.history(agent.amphora_id).latest().seq
    assert len(old.history(agent.amphora_id).heartbeats) == 1  # nothing more to the old one
    assert agent.process.pid == pid and agent.process.poll() is None
    assert agent.config_path.read_text() == text


def test_wrong_key_heartbeats_are_dropped_by_a_controller_that_rotated(agent, receivers):
    """The key really is used: a receiver that trusts only the new key drops the old one's."""
    old, _ = receivers
    old.wait_for(agent.amphora_id, count=1, timeout=20)
    old.set_key(NEW_KEY)
    text = with_options(agent.config_path.read_text(),
                        heartbeat_interval=("health_manager", str(FAST_INTERVAL_S)))
    agent.client.update_agent_config(text)  # same key as before: OLD_KEY
    deadline = time.monotonic() + 20
    while len(old.dropped) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(old.dropped) >= 3
    assert all("HMAC" in reason for _, reason in old.dropped)


# Each makes a bad file from the agent's current one.
BAD_FILES = {
    "not-ini": lambda _original: b"[amphora_agent\nthis is not INI",
    "no-amphora-id": lambda _original: b"[haproxy_amphora]\nbind_port = 9443\n",
    "bad-interval": lambda original: with_options(
        original, heartbeat_interval=("health_manager", "often")).encode(),
    "bad-controller": lambda original: with_options(
        original, controller_ip_port_list=("health_manager", "no-port")).encode(),
    "not-utf8": lambda _original: b"\xff\xfe[amphora_agent]\n",
    # Parsed fine as numbers, yet each would stall or spin the heartbeat loop.
    "nan-interval": lambda original: with_options(
        original, heartbeat_interval=("health_manager", "nan")).encode(),
    "zero-interval": lambda original: with_options(
        original, heartbeat_interval=("health_manager", "0")).encode(),
    "infinite-interval": lambda original: with_options(
        original, heartbeat_interval=("health_manager", "inf")).encode(),
    "controller-port-out-of-range": lambda original: with_options(
        original, controller_ip_port_list=("health_manager", "127.0.0.1:70000")).encode(),
    "unknown-topology": lambda original: with_options(
        original, loadbalancer_topology=("controller_worker", "ACTIVE_ACTIVE")).encode(),
}


@pytest.mark.parametrize("make_bad_file", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_malformed_file_changes_nothing(agent, receivers, make_bad_file):
    old, _ = receivers
    old.wait_for(agent.amphora_id, count=1, timeout=20)
    original = agent.config_path.read_bytes()
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.update_agent_config(make_bad_file(original.decode()))
    assert (caught.value.status, caught.value.message) == (500, ERROR)
    assert caught.value.details
    assert agent.config_path.read_bytes() == original
    assert agent.client.get_info()["uuid"] == agent.amphora_id
    assert agent.process.poll() is None
