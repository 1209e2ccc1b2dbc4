"""The agent under attack, round two: each case is one way a client without a certificate, or a
careless controller, could lock the agent, brick it, or tear its state; against a real agent
process with the lab PKI on 127.0.0.1."""

from __future__ import annotations

import configparser
import io
import time

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
