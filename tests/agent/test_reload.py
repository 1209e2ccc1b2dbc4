"""Seamless reloads: 100 reloads through the API while clients keep opening connections and
slow requests are in flight. No connection may be refused or cut, every request completes."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from harness.amphora_api.client import AmphoraAPIError
from harness.polling import poll_until

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


# --- readiness: a reload (and a start) answers only once haproxy's master said READY=1 ---------

READY_RELOADS = 20
# READY=1 is sent a few statements before the master unblocks its signals (haproxy 2.6's
# mworker_loop); a reload answered at the new worker's fork, as before, left the master blocked
# for the whole wait-mode re-execution (tens of ms) in about half of the reloads.
UNBLOCK_GRACE_S = 0.02


def _sigusr2_blocked(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGUSR2 - 1)))
    raise AssertionError(f"no SigBlk in /proc/{pid}/status")


def _master_ready(pid: int) -> bool:
    """The master is back in its loop: it takes SIGUSR2 again (checked within a grace)."""
    # Not harness.polling.poll_until: the grace is how far after the answer readiness may lag,
    # the thing measured, so it must not grow with the timeout factor.
    deadline = time.monotonic() + UNBLOCK_GRACE_S
    while _sigusr2_blocked(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _master(agent, lb_id: str) -> psutil.Process:
    return psutil.Process(int((agent.base_path / lb_id / f"{lb_id}.pid").read_text()))


def test_reload_answers_once_haproxy_is_ready(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    master = _master(agent, lb.lb_id)
    # haproxy runs as under Octavia's Type=notify unit, with -Ws, and tells the agent.
    assert "-Ws" in master.cmdline()
    assert _master_ready(master.pid)

    not_ready = []
    for number in range(READY_RELOADS):
        if number == READY_RELOADS // 2:
            # A haproxy started by an earlier agent process reaches the new one.
            agent.restart()
        workers = {child.pid for child in master.children()}
        agent.client.reload(lb.lb_id)
        if not _master_ready(master.pid):
            not_ready.append(number)
        assert {child.pid for child in master.children()} - workers, number
    assert not_ready == []
    assert one_request(lb.port, "/") is None
    # Every READY=1 came from the master it named.
    assert "came from pid" not in agent.log()


def test_reload_without_ready_fails_clearly(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    master = _master(agent, lb.lb_id)
    master.suspend()  # takes no signal, says nothing: READY=1 never comes
    try:
        started = time.monotonic()
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.reload(lb.lb_id)
        waited = time.monotonic() - started
    finally:
        master.resume()
    assert caught.value.status == 500
    assert caught.value.message == "Error reloading haproxy"
    assert f"master pid {master.pid}) did not report ready (READY=1) within 15 s" in str(
        caught.value.details)
    assert 14 < waited < 40  # bounded: the reload's timeout, not the client's
    # The master takes the pending signal once it runs again, and serves on.
    assert poll_until(lambda: _master_ready(master.pid), 15)
    time.sleep(1)  # its late READY=1 is in before the next reload marks
    agent.client.reload(lb.lb_id)
    assert one_request(lb.port, "/") is None


def test_check_only_file_is_for_checks_only(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    check_only = agent.base_path / "haproxy-check-only.conf"
    assert check_only.read_text() == "global\n    httpclient.ssl.verify none\n"
    agent.client.start(lb.lb_id)
    agent.client.reload(lb.lb_id)
    master = _master(agent, lb.lb_id)
    for process in (master, *master.children()):
        assert str(check_only) not in process.cmdline()
    # A config haproxy refuses is still refused with the check-only file.
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.upload_config(lb.lb_id, lb.text + "frontend broken\n    bind :notaport\n")
    assert caught.value.status == 400


def test_serving_haproxy_skips_the_ca_store_only_when_its_http_client_is_unreachable(
        agent_factory, lb_config, http_backend, tmp_path):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    httpclient = agent.base_path / lb.lb_id / "haproxy-httpclient.conf"
    master = _master(agent, lb.lb_id)
    assert str(httpclient) in master.cmdline()
    # Nothing in this config can reach haproxy's HTTP client (no Lua, no admin stats socket).
    assert httpclient.read_text() == "global\n    httpclient.ssl.verify none\n"
    # A config that loads Lua (core.httpclient) gets the client as haproxy sets it up: the
    # master re-executes with the same files, so a reload reads the rewritten one.
    script = tmp_path / "noop.lua"
    script.write_text("core.register_service('noop', 'http', function(applet) end)\n")
    with_lua = lb_config(agent, http_backend.port, lb_id=lb.lb_id, port=lb.port,
                         extra_global=f"    lua-load {script}\n")
    agent.client.upload_config(lb.lb_id, with_lua.text)
    agent.client.reload(lb.lb_id)
    assert httpclient.read_text() == "global\n"
    assert _master(agent, lb.lb_id).pid == master.pid
    assert one_request(lb.port, "/") is None
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.reload(lb.lb_id)
    assert httpclient.read_text() == "global\n    httpclient.ssl.verify none\n"
    assert one_request(lb.port, "/") is None
