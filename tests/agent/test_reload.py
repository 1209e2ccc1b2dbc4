"""Seamless reloads: 100 reloads through the API while clients keep opening connections and
slow requests are in flight. No connection may be refused or cut, every request completes."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

import psutil

RELOADS = 100
FAST_CLIENTS = 3
SLOW_CLIENTS = 2
SLOW_DELAY_S = 0.3
# Fast clients pause this long between connections: still hundreds of new connections per
# second, without starving the agent and haproxy of the CPU they share with the test.
FAST_PAUSE_S = 0.005
# Bounds on every loop, whatever happens.
MAX_REQUESTS_PER_CLIENT = 100_000
TRAFFIC_DEADLINE_S = 120.0


@dataclass
class Tally:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.ok += 1
            else:
                self.failures.append(failure)


def one_request(port: int, path: str) -> str | None:
    """A request on a new connection; None if it fully succeeded, else what went wrong."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or not body.startswith(b"backend "):
            return f"{path}: HTTP {response.status} {body[:80]!r}"
        return None
    except (OSError, http.client.HTTPException) as exc:
        return f"{path}: {type(exc).__name__}: {exc}"
    finally:
        connection.close()


def client_loop(port: int, path: str, tally: Tally, stop: threading.Event,
                pause: float = 0.0) -> None:
    deadline = time.monotonic() + TRAFFIC_DEADLINE_S
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if stop.wait(pause) or time.monotonic() > deadline:
            return
        tally.record(one_request(port, path))


def test_reloads_under_traffic_refuse_nothing(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    master = int((agent.base_path / lb.lb_id / f"{lb.lb_id}.pid").read_text())

    fast, slow, stop = Tally(), Tally(), threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(lb.port, "/", fast, stop, FAST_PAUSE_S))
        for _ in range(FAST_CLIENTS)
    ] + [
        threading.Thread(target=client_loop, args=(lb.port, f"/?delay={SLOW_DELAY_S}", slow, stop))
        for _ in range(SLOW_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(SLOW_DELAY_S)  # slow requests are in flight before the first reload
        for number in range(RELOADS):
            answer = agent.client.reload(lb.lb_id)
            assert answer["details"] == f"Listener {lb.lb_id} reloaded", number
    finally:
        time.sleep(SLOW_DELAY_S * 2)  # let the last slow requests span the last reload
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)

    assert fast.failures == []
    assert slow.failures == []
    # Traffic really flowed across the reloads (not a vacuous pass).
    assert fast.ok >= RELOADS
    assert slow.ok >= SLOW_CLIENTS * 2
    # Still the same master: reloads never restarted haproxy.
    assert int((agent.base_path / lb.lb_id / f"{lb.lb_id}.pid").read_text()) == master
    assert psutil.Process(master).is_running()
