"""Heartbeats from live amphorae to the controller's receiver on the lb-mgmt gateway: the rate,
the sequence and the HMAC, and a PUT /1.0/config that changes the interval and the key."""

from __future__ import annotations

import secrets
import statistics
import time
from dataclasses import replace

import pytest

from harness.lab.agent_config import render_agent_config
from harness.lab.lab import LabAmphora
from harness.observe.heartbeats import HeartbeatReceiver
from harness.pytest_plugin import LabShape

# Octavia's [health_manager] heartbeat_interval is an integer number of seconds (oslo IntOpt):
# its agent refuses 0.3 and sends no heartbeat at all.
INTERVAL_S = 2
NEW_INTERVAL_S = 1
HEARTBEATS_OBSERVED = 6
# Arrival times jitter on a busy host: the median interval must be near the configured one,
# within this share of it. A sender stuck on the old interval misses by 70% or more.
INTERVAL_TOLERANCE = 0.4


@pytest.fixture(scope="module")
def lab_shape(heartbeats: HeartbeatReceiver) -> LabShape:
    return LabShape(amphorae=2, members=0, agent_settings=heartbeats.agent_settings(INTERVAL_S))


def assert_interval(intervals: list[float], expected_s: float) -> None:
    assert intervals, "not two heartbeats to measure an interval"
    median = statistics.median(intervals)
    assert abs(median - expected_s) <= INTERVAL_TOLERANCE * expected_s, (expected_s, intervals)


def push_heartbeat_options(amphora: LabAmphora, **options) -> None:
    """PUT /1.0/config with the amphora's whole config, heartbeat options changed."""
    settings = replace(amphora.agent_settings, **options)
    assert amphora.client.update_agent_config(render_agent_config(settings)) == {
        "message": "OK"}
    amphora.agent_settings = settings


def test_every_amphora_sends_signed_heartbeats_in_sequence(
    heartbeats: HeartbeatReceiver, amphorae: list[LabAmphora],
) -> None:
    for amphora in amphorae:
        heartbeats.wait_for(amphora.id, count=HEARTBEATS_OBSERVED, timeout=30)
    for amphora in amphorae:
        history = heartbeats.history(amphora.id)
        assert history.seq_gaps() == []
        assert {hb.source[0] for hb in history.heartbeats} == {str(amphora.mgmt_address)}
        assert {hb.message["id"] for hb in history.heartbeats} == {amphora.id}
        assert_interval(history.intervals(), INTERVAL_S)
        assert heartbeats.dropped_from(str(amphora.mgmt_address)) == 0


def test_new_interval_and_key_apply_and_the_old_key_is_rejected(
    heartbeats: HeartbeatReceiver, amphorae: list[LabAmphora],
) -> None:
    rotated, unrotated = amphorae
    last_seq = heartbeats.wait_for(rotated.id, count=1)[-1].seq
    new_key = secrets.token_hex(16)

    push_heartbeat_options(rotated, heartbeat_key=new_key, heartbeat_interval=NEW_INTERVAL_S)
    heartbeats.set_key(new_key)
    rotated_at = time.time()
    old_key_drops = heartbeats.dropped_from(str(unrotated.mgmt_address))

    beats = heartbeats.wait_for(rotated.id, count=HEARTBEATS_OBSERVED * 2, after=rotated_at,
                                timeout=30)
    assert all(hb.seq > last_seq for hb in beats)
    history = heartbeats.history(rotated.id)
    # Increasing throughout; a gap is a message signed with the new key that arrived before
    # the receiver trusted it.
    assert all(b > a for a, b in history.seq_gaps())
    assert_interval(history.intervals(since=rotated_at), NEW_INTERVAL_S)

    # The other amphora still signs with the old key: everything it sends now is dropped.
    assert heartbeats.history(unrotated.id).latest().received_at < rotated_at
    assert heartbeats.dropped_from(str(unrotated.mgmt_address)) >= old_key_drops + 2

    push_heartbeat_options(unrotated, heartbeat_key=new_key)
    heartbeats.wait_for(unrotated.id, count=3, after=time.time(), timeout=30)
    assert heartbeats.dropped_from(str(rotated.mgmt_address)) <= 2
