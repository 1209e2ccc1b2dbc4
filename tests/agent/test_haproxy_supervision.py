"""haproxy under the agent as under Octavia's systemd unit: a haproxy that dies is started
again on the same config (Restart=always), whichever start or reload through the API or
restart by the agent made its master; one stopped or deleted through the API is not, a crash
loop ends after 5 starts within the start limit interval (systemd's start limit), and the
workers run with the group of haproxy-default-user-group.conf. A real agent process and real
haproxy."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import time
import urllib.request

import psutil
import pytest

from harness.polling import poll_until

# The agent starts a dead master 0.1 s after its exit; a start takes a haproxy -c and a
# daemonization. Generous for a loaded 2-core runner, and still far from "never".
RESTART_TIMEOUT_S = 5.0
# Many times the agent's 0.1 s RestartSec.
STAYS_DOWN_S = 1.5
# haproxy_start_limit_interval for the crash-loop test: the limit's 5 starts must fall within it
# however slow the machine (systemd's 10 s is the default, tests/unit/test_agent_haproxy_units).
CRASH_LOOP_INTERVAL_S = 3600


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.read().decode()


def serves(port: int) -> bool:
    try:
        return bool(fetch(port))
    except OSError:
        return False


def master_pid(agent, lb_id: str) -> int | None:
    """The live master named by the pid file, or None."""
    try:
        pid = int((agent.base_path / lb_id / f"{lb_id}.pid").read_text().split()[0])
        process = psutil.Process(pid)
        return pid if process.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def haproxy_processes(agent, lb_id: str) -> list[psutil.Process]:
    config = str(agent.base_path / lb_id / "haproxy.cfg")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if config in (process.info["cmdline"] or []) and \
                    process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def kill_master(agent, lb_id: str) -> int:
    pid = master_pid(agent, lb_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def new_master(agent, lb_id: str, old: int) -> int | None:
    """Wait for a live master other than old; its pid, or None if none came."""
    found: list[int] = []

    def came() -> bool:
        pid = master_pid(agent, lb_id)
        if pid is not None and pid != old:
            found.append(pid)
            return True
        return False

    return found[-1] if poll_until(came, RESTART_TIMEOUT_S) else None


def start_lb(agent, lb_config, http_backend):
    lb = lb_config(agent, http_backend.port, extra_global="    user nobody")
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    assert serves(lb.port)
    return agent, lb


@pytest.fixture
def running_lb(agent_factory, lb_config, http_backend):
    return start_lb(agent_factory(), lb_config, http_backend)


def test_killed_haproxy_is_started_again_on_the_same_config(running_lb, http_backend):
    agent, lb = running_lb
    client = agent.client
    config = client.get_config(lb.lb_id)
    old = kill_master(agent, lb.lb_id)
    killed_at = time.monotonic()

    pid = new_master(agent, lb.lb_id, old)
    assert pid is not None, f"no haproxy came back:\n{agent.log()}"
    assert poll_until(lambda: serves(lb.port), RESTART_TIMEOUT_S)
    back_after = time.monotonic() - killed_at
    assert back_after < RESTART_TIMEOUT_S
    assert fetch(lb.port) == f"backend {http_backend.port}\n"
    assert client.get_config(lb.lb_id) == config
    assert client.get_listeners() == [
        {"status": "ACTIVE", "uuid": lb.listener_id, "type": "HTTP"}]
    # Nothing of the dead master is left: only the new master and its workers.
    assert poll_until(
        lambda: {p.pid for p in haproxy_processes(agent, lb.lb_id)}
        == {pid, *(c.pid for c in psutil.Process(pid).children())}, RESTART_TIMEOUT_S)
    assert "exited unexpectedly; starting it again" in agent.log()
    # And the agent still controls the new one.
    client.reload(lb.lb_id)
    assert master_pid(agent, lb.lb_id) == pid
    assert serves(lb.port)


def test_every_master_is_watched_whoever_started_it(running_lb):
    """The master the agent started again, the one a reload re-executed, and one a stop and
    start through the API made: each is started again when it is killed."""
    agent, lb = running_lb
    client = agent.client

    def killed_master_comes_back() -> None:
        killed = kill_master(agent, lb.lb_id)
        assert new_master(agent, lb.lb_id, killed) is not None, agent.log()
        assert poll_until(lambda: serves(lb.port), RESTART_TIMEOUT_S)

    killed_master_comes_back()  # the API's start made it
    killed_master_comes_back()  # the agent's own restart made it
    client.reload(lb.lb_id)
    killed_master_comes_back()
    client.stop(lb.lb_id)
    client.start(lb.lb_id)
    killed_master_comes_back()
    assert agent.log().count("exited unexpectedly; starting it again") == 4


def test_all_of_haproxy_killed_is_started_again(running_lb):
    agent, lb = running_lb
    old = master_pid(agent, lb.lb_id)
    for process in haproxy_processes(agent, lb.lb_id):
        process.kill()
    assert new_master(agent, lb.lb_id, old) is not None
    assert poll_until(lambda: serves(lb.port), RESTART_TIMEOUT_S)


def test_stopped_or_deleted_lb_stays_down(running_lb, agent_factory, lb_config, http_backend):
    agent, lb = running_lb
    client = agent.client
    client.stop(lb.lb_id)
    time.sleep(STAYS_DOWN_S)
    assert not serves(lb.port)
    assert haproxy_processes(agent, lb.lb_id) == []
    assert client.get_listeners()[0]["status"] == "STOPPED"

    # One started again and deleted: gone for good too.
    client.start(lb.lb_id)
    assert serves(lb.port)
    client.delete_lb(lb.lb_id)
    time.sleep(STAYS_DOWN_S)
    assert not serves(lb.port)
    assert haproxy_processes(agent, lb.lb_id) == []
    assert "starting it again" not in agent.log()


def test_agent_shutting_down_restarts_nothing(running_lb):
    """Once the agent got SIGTERM (amphora-init's shutdown stops it before haproxy), a
    haproxy that exits stays down."""
    agent, lb = running_lb
    agent.process.send_signal(signal.SIGTERM)
    agent.process.wait(10)
    kill_master(agent, lb.lb_id)
    time.sleep(STAYS_DOWN_S)
    assert not serves(lb.port)


def test_a_crash_loop_ends_after_five_starts_within_the_interval(agent_factory, lb_config,
                                                                  http_backend):
    """As systemd's start limit: the API's start and 4 restarts are 5 starts; when the next
    crash comes within the interval of the first start, the load balancer is left down (ERROR).
    The interval is an hour here, so the 5 starts fall within it on any machine."""
    agent = agent_factory(extra={"amphora_agent": {
        "haproxy_start_limit_interval": str(CRASH_LOOP_INTERVAL_S)}})
    agent, lb = start_lb(agent, lb_config, http_backend)
    client = agent.client
    restarts = 0
    pid = master_pid(agent, lb.lb_id)
    for _ in range(10):  # bounded: the limit must end it after 4
        kill_master(agent, lb.lb_id)
        pid = new_master(agent, lb.lb_id, pid)
        if pid is None:
            break
        restarts += 1
    assert restarts == 4, agent.log()
    time.sleep(STAYS_DOWN_S)
    assert master_pid(agent, lb.lb_id) is None
    assert not serves(lb.port)
    assert client.get_listeners()[0]["status"] == "ERROR"
    assert agent.log().count("start request repeated too quickly") == 1
    assert f"(5 starts within {CRASH_LOOP_INTERVAL_S} s)" in agent.log()

    # A start through the API clears it, and crashes are restarted again.
    client.start(lb.lb_id)
    assert serves(lb.port)
    old = kill_master(agent, lb.lb_id)
    assert new_master(agent, lb.lb_id, old) is not None
    assert poll_until(lambda: serves(lb.port), RESTART_TIMEOUT_S)


def test_workers_run_with_the_user_group_file_group(running_lb):
    agent, lb = running_lb
    user_group = agent.base_path / "haproxy-default-user-group.conf"
    assert user_group.read_text() == "global\n    group nogroup\n"
    master = psutil.Process(master_pid(agent, lb.lb_id))
    cmdline = master.cmdline()
    config = str(agent.base_path / lb.lb_id / "haproxy.cfg")
    httpclient = str(agent.base_path / lb.lb_id / "haproxy-httpclient.conf")
    # As Octavia's unit: the config, then the user-group file; then the agent's httpclient file.
    assert cmdline[-6:] == ["-f", config, "-f", str(user_group), "-f", httpclient]
    workers = master.children()
    assert workers
    nogroup = grp.getgrnam("nogroup").gr_gid
    for worker in workers:
        with open(f"/proc/{worker.pid}/status", encoding="ascii") as lines:
            gid_line = next(line for line in lines if line.startswith("Gid:"))
        real, effective, saved, _fs = (int(v) for v in gid_line.split()[1:])
        assert (real, effective, saved) == (nogroup, nogroup, nogroup)
        assert worker.uids().effective == pwd.getpwnam("nobody").pw_uid  # from the config
