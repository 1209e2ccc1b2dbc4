"""Heartbeats from a real agent to a real UDP receiver on loopback, with real haproxy traffic.

The receiver (harness.health) checks the HMAC and decodes the envelope; these tests check every
field of the version-3 message, and that N connections through a listener add up to exactly N
in the summed totconns deltas, across haproxy reloads and an agent restart.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from harness.health import HeartbeatReceiver

KEY = "heartbeat-test-key"
INTERVAL_S = 0.5
SETTLE_HEARTBEATS = 3


def send_requests(port: int, count: int) -> None:
    """count HTTP requests, each on its own connection (one haproxy session each)."""
    for _ in range(count):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/",
                                         headers={"Connection": "close"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def settled_total(receiver: HeartbeatReceiver, amphora_id: str, listener_id: str,
                  expected: int, timeout: float = 20.0) -> int:
    """Wait until the summed totconns reaches expected, then a few more heartbeats (a doubled
    count would show up there), and return the final sum."""
    deadline = time.monotonic() + timeout
    history = receiver.history(amphora_id)
    while history.summed(listener_id, "totconns") < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        history = receiver.history(amphora_id)
    receiver.wait_for(amphora_id, count=SETTLE_HEARTBEATS, after=time.time(), timeout=timeout)
    return receiver.history(amphora_id).summed(listener_id, "totconns")


@pytest.fixture
def receiver():
    with HeartbeatReceiver(KEY) as running:
        yield running


@pytest.fixture
def heartbeating_lb(agent_factory, lb_config, http_backend, receiver):
    host, port = receiver.address
    agent = agent_factory(controllers=[f"{host}:{port}"], heartbeat_interval=INTERVAL_S,
                          heartbeat_key=KEY)
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    return agent, lb


def test_message_fields(heartbeating_lb, receiver):
    agent, lb = heartbeating_lb
    send_requests(lb.port, 3)
    beats = receiver.wait_for(agent.amphora_id, count=4, timeout=20)
    assert receiver.dropped == []
    seqs = [beat.seq for beat in beats]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    message = beats[-1].message
    assert set(message) == {"id", "seq", "ver", "listeners", "pools"}
    assert message["id"] == agent.amphora_id
    assert message["ver"] == 3
    assert set(message["listeners"]) == {lb.listener_id}
    listener = message["listeners"][lb.listener_id]
    assert listener["status"] == "OPEN"
    assert set(listener["stats"]) == {"tx", "rx", "conns", "totconns", "ereq"}
    assert all(isinstance(value, int) and value >= 0 for value in listener["stats"].values())
    pool_key = f"{lb.pool_id}:{lb.listener_id}"
    assert message["pools"] == {pool_key: {"status": "UP", "members": {lb.member_id: "no check"}}}
    history = receiver.history(agent.amphora_id)
    assert history.summed(lb.listener_id, "totconns") == 3
    # Bytes went both ways and are reported as deltas: their sum is positive.
    assert history.summed(lb.listener_id, "rx") > 0
    assert history.summed(lb.listener_id, "tx") > 0


def test_member_status_follows_haproxy(agent_factory, lb_config, receiver):
    """A member on a port nobody listens on, with health checks on: reported DOWN, and its
    pool DOWN."""
    host, port = receiver.address
    agent = agent_factory(controllers=[f"{host}:{port}"], heartbeat_interval=INTERVAL_S,
                          heartbeat_key=KEY)
    closed_port = 9  # discard: nothing listens on it on loopback
    lb = lb_config(agent, closed_port)
    checked = lb.text.replace(" weight 1", " weight 1 check inter 200 fall 1")
    agent.client.upload_config(lb.lb_id, checked)
    agent.client.start(lb.lb_id)
    pool_key = f"{lb.pool_id}:{lb.listener_id}"

    def reported_down() -> bool:
        latest = receiver.history(agent.amphora_id).latest()
        pool = latest.message["pools"].get(pool_key) if latest else None
        return pool == {"status": "DOWN", "members": {lb.member_id: "DOWN"}}

    deadline = time.monotonic() + 20
    while not reported_down() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reported_down(), receiver.history(agent.amphora_id).latest()


def test_totconns_exact_across_reloads(heartbeating_lb, receiver):
    agent, lb = heartbeating_lb
    expected = 0
    for batch in (5, 7, 4):
        send_requests(lb.port, batch)
        expected += batch
        # Reload right away: some of these connections were not reported by the old worker.
        agent.client.reload(lb.lb_id)
    assert settled_total(receiver, agent.amphora_id, lb.listener_id, expected) == expected


def test_totconns_exact_across_stop_and_start(heartbeating_lb, receiver):
    agent, lb = heartbeating_lb
    send_requests(lb.port, 6)
    agent.client.stop(lb.lb_id)
    agent.client.start(lb.lb_id)
    send_requests(lb.port, 2)
    assert settled_total(receiver, agent.amphora_id, lb.listener_id, 8) == 8


def test_totconns_and_seq_survive_agent_restart(heartbeating_lb, receiver):
    agent, lb = heartbeating_lb
    send_requests(lb.port, 4)
    assert settled_total(receiver, agent.amphora_id, lb.listener_id, 4) == 4
    last_seq = receiver.history(agent.amphora_id).latest().seq
    send_requests(lb.port, 3)
    agent.restart()  # haproxy keeps running and counting; the agent finds it again
    send_requests(lb.port, 2)
    assert settled_total(receiver, agent.amphora_id, lb.listener_id, 9) == 9
    seqs = receiver.history(agent.amphora_id).seqs
    after = seqs[seqs.index(last_seq) + 1:]
    assert after and all(b > a for a, b in zip([last_seq, *after], after, strict=False))


def test_bad_controller_does_not_stop_heartbeats(agent_factory, receiver):
    host, port = receiver.address
    agent = agent_factory(
        controllers=["no-such-controller.invalid:5555", "[::1]:1", f"{host}:{port}"],
        heartbeat_interval=INTERVAL_S, heartbeat_key=KEY)
    beats = receiver.wait_for(agent.amphora_id, count=3, timeout=20)
    # No load balancer: an empty but complete message.
    assert beats[-1].message["listeners"] == {} and beats[-1].message["pools"] == {}


def test_no_controller_means_no_heartbeat_and_no_lost_counts(agent_factory, receiver):
    """Without controllers nothing is sent (and no seq is spent)."""
    agent = agent_factory(heartbeat_interval=INTERVAL_S, heartbeat_key=KEY)
    time.sleep(INTERVAL_S * 4)
    assert receiver.amphora_ids() == []
    counters = agent.base_path / "stats_counters.json"
    assert not counters.exists()
