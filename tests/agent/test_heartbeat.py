"""Heartbeats from a real agent to a real UDP receiver on loopback, with real haproxy traffic.

The receiver (harness.observe.heartbeats) checks the HMAC and decodes the envelope; these tests
check every
field of the version-3 message, and that N connections through a listener add up to exactly N
in the summed totconns deltas, across haproxy reloads (also while traffic keeps flowing through
them), stop/start and an agent restart.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil
import pytest

from harness.observe.heartbeats import HeartbeatReceiver

KEY = "heartbeat-test-key"
INTERVAL_S = 0.5
SETTLE_HEARTBEATS = 3
# Reloads under continuous traffic: one round per gap between reloads (0: back to back, while
# the worker replaced last may not have been told to stop yet).
CALIBRATION_CONNECTIONS = 20
RELOAD_GAPS_S = (0.2, 0.05, 0.0)
RELOADS_PER_ROUND = 4
# Bounds on the traffic loop, whatever happens.
TRAFFIC_MAX_CONNECTIONS = 20_000
TRAFFIC_MAX_S = 30.0
WORKERS_GONE_TIMEOUT_S = 5.0


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


REQUEST = b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"


@dataclass
class Traffic:
    """Connections made, one identical request each, and what came back."""

    connections: int = 0
    response_lengths: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def exchange(self, port: int) -> None:
        """Send REQUEST on a new connection and read the answer until haproxy closes it."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(REQUEST)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            self.failures.append(repr(exc))
            return
        response = b"".join(chunks)
        self.connections += 1
        self.response_lengths.add(len(response))
        if not response.startswith(b"HTTP/1.1 200 "):
            self.failures.append(repr(response[:80]))


def keep_sending(port: int, traffic: Traffic, stop: threading.Event) -> None:
    """New connections back to back until stop is set (bounded in count and time)."""
    deadline = time.monotonic() + TRAFFIC_MAX_S
    for _ in range(TRAFFIC_MAX_CONNECTIONS):
        if stop.is_set() or time.monotonic() > deadline:
            return
        traffic.exchange(port)


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


def test_counts_exact_across_reloads_under_traffic(heartbeating_lb, receiver):
    """Connections keep coming while haproxy reloads, so old workers accept some right up to
    their soft-stop: every connection and every byte is reported exactly once."""
    agent, lb = heartbeating_lb
    # haproxy's byte counters are not the wire bytes (it counts what it parsed), but the same
    # exchange always counts the same: learn how much from connections no reload disturbs.
    calibration = Traffic()
    for _ in range(CALIBRATION_CONNECTIONS):
        calibration.exchange(lb.port)
    assert calibration.failures == []
    settled_total(receiver, agent.amphora_id, lb.listener_id, CALIBRATION_CONNECTIONS)
    calibrated = receiver.history(agent.amphora_id).totals(lb.listener_id)
    assert calibrated["totconns"] == CALIBRATION_CONNECTIONS
    per_connection = {name: calibrated[name] // CALIBRATION_CONNECTIONS for name in ("rx", "tx")}
    assert {name: value * CALIBRATION_CONNECTIONS for name, value in per_connection.items()} == {
        name: calibrated[name] for name in ("rx", "tx")}

    traffic, stop = Traffic(), threading.Event()
    for gap in RELOAD_GAPS_S:
        stop.clear()
        sender = threading.Thread(target=keep_sending, args=(lb.port, traffic, stop))
        sender.start()
        try:
            for _ in range(RELOADS_PER_ROUND):
                time.sleep(gap)
                agent.client.reload(lb.lb_id)
            time.sleep(gap)
        finally:
            stop.set()
            sender.join(TRAFFIC_MAX_S)
        assert not sender.is_alive()
    assert traffic.failures == []
    assert traffic.response_lengths == calibration.response_lengths
    assert traffic.connections > len(RELOAD_GAPS_S) * RELOADS_PER_ROUND  # traffic flowed
    expected = CALIBRATION_CONNECTIONS + traffic.connections
    assert settled_total(receiver, agent.amphora_id, lb.listener_id, expected) == expected
    totals = receiver.history(agent.amphora_id).totals(lb.listener_id)
    assert {name: totals[name] for name in ("rx", "tx")} == {
        name: value * expected for name, value in per_connection.items()}
    # Every old worker the agent held was let go once drained: only the current one is left.
    master = psutil.Process(int((agent.base_path / lb.lb_id / f"{lb.lb_id}.pid").read_text()))
    deadline = time.monotonic() + WORKERS_GONE_TIMEOUT_S
    while len(master.children()) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(master.children()) == 1


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
