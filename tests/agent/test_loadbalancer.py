"""haproxy config upload / get, start / stop / reload, delete, listeners status, info and
details: a real agent process driven through harness.amphora_api.client over mutual TLS, real
haproxy
serving real traffic on loopback."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from harness.amphora_api.client import AmphoraAPIError
from harness.polling import poll_until
from tests.support.api_errors import expect_error

BAD_CONFIG = "global\n    daemon\nthis_is_not_a_keyword\n"


def fetch(port: int, path: str = "/", timeout: float = 10.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return response.read().decode()


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def snapshot(directory) -> dict[str, bytes]:
    """Every regular file under directory with its content."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*")) if path.is_file()
    }


def dpkg_version_field(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                            capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""


def master_pid(agent, lb_id: str) -> int:
    return int((agent.base_path / lb_id / f"{lb_id}.pid").read_text().split()[0])


@pytest.fixture
def running_lb(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    lb = lb_config(agent, http_backend.port)
    agent.client.upload_config(lb.lb_id, lb.text)
    agent.client.start(lb.lb_id)
    return agent, lb


def test_discovery_and_info(agent_factory):
    agent = agent_factory()
    client = agent.client
    assert client.version() == {"api_version": "1.0"}
    info = client.get_info()
    assert info == client.get_info(prefixed=False)
    assert info["uuid"] == agent.amphora_id
    assert info["api_version"] == "1.0"
    assert info["hostname"] == socket.gethostname()
    assert info["haproxy_version"].startswith("2.")
    # As Octavia's agent: dpkg's Version field as is ("" for a package dpkg knows but that is
    # not installed, and ours also for one it never heard of, where Octavia's answers 500).
    for package in ("keepalived", "ipvsadm"):
        assert info[f"{package}_version"] == dpkg_version_field(package)
    assert agent.client.get_details()["keepalived_version"] == info["keepalived_version"]


def test_upload_get_start_serves_traffic(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    client = agent.client
    lb = lb_config(agent, http_backend.port)

    etag = client.upload_config(lb.lb_id, lb.text)
    assert etag == hashlib.md5(lb.text.encode()).hexdigest()
    assert client.get_config(lb.lb_id) == (lb.text, etag)
    assert client.get_listeners() == [
        {"status": "STOPPED", "uuid": lb.listener_id, "type": "HTTP"}]
    assert refuses(lb.port)  # an upload alone starts nothing

    answer = client.start(lb.lb_id)
    assert answer == {"message": "OK", "details": "Configuration file is valid\n"
                      f"haproxy daemon for {lb.lb_id} started"}
    assert fetch(lb.port) == f"backend {http_backend.port}\n"
    assert client.get_listeners() == [
        {"status": "ACTIVE", "uuid": lb.listener_id, "type": "HTTP"}]
    # Starting what runs is a no-op: same master.
    pid = master_pid(agent, lb.lb_id)
    client.start(lb.lb_id)
    assert master_pid(agent, lb.lb_id) == pid


def test_details_report_real_figures(running_lb):
    agent, lb = running_lb
    details = agent.client.get_details()
    assert details["uuid"] == agent.amphora_id
    assert details["haproxy_count"] == 1
    assert details["listeners"] == [lb.listener_id]
    assert details["topology"] == "SINGLE"
    assert details["topology_status"] == "OK"
    assert details["active"] is True
    memory = psutil.virtual_memory()
    # kB, as the API specifies; within 10 % of what psutil sees now.
    assert abs(details["memory"]["total"] - memory.total // 1024) < memory.total // 10240
    assert set(details["memory"]) >= {"total", "free", "available", "buffers", "cached",
                                      "swap_used", "shared", "slab", "committed_as"}
    disk = psutil.disk_usage("/")
    assert details["disk"]["available"] > 0
    assert abs(details["disk"]["used"] - disk.used // 1024) < disk.total // 10240
    assert details["cpu"]["total"] >= details["cpu"]["user"] + details["cpu"]["system"] > 0
    assert len(details["load"]) == 3
    assert details["cpu_count"] == os.cpu_count()
    tuned = Path("/etc/tuned/active_profile")
    assert details["active_tuned_profiles"] == (
        tuned.read_text()[:1024].strip() if tuned.is_file() else "")
    assert details["lvs_listener_process_count"] == 0
    assert set(details["packages"]) == {"haproxy", "keepalived"}
    assert details["packages"]["haproxy"] == details["haproxy_version"]
    assert "lo" not in details["networks"]
    assert all(set(v) == {"network_tx", "network_rx"} for v in details["networks"].values())

    agent.client.stop(lb.lb_id)
    assert agent.client.get_details()["haproxy_count"] == 0


def test_stop_reload_and_reload_starts_a_stopped_lb(running_lb):
    agent, lb = running_lb
    client = agent.client
    assert client.stop(lb.lb_id) == {"message": "OK", "details": f"Listener {lb.lb_id} stoped"}
    assert refuses(lb.port)
    assert not (agent.base_path / lb.lb_id / f"{lb.lb_id}.pid").exists()
    assert client.get_listeners()[0]["status"] == "STOPPED"
    # Stopping what is stopped succeeds.
    client.stop(lb.lb_id)

    # A reload of a stopped load balancer starts it, and says so.
    answer = client.reload(lb.lb_id)
    assert answer["details"] == (
        f"Configuration file is valid\nhaproxy daemon for {lb.lb_id} started")
    assert fetch(lb.port)

    pid = master_pid(agent, lb.lb_id)
    workers = psutil.Process(pid).children()
    assert client.reload(lb.lb_id) == {"message": "OK",
                                       "details": f"Listener {lb.lb_id} reloaded"}
    # Same master, a new worker.
    assert master_pid(agent, lb.lb_id) == pid
    assert {p.pid for p in psutil.Process(pid).children()} - {p.pid for p in workers}
    assert fetch(lb.port)
    # The reload saved the server state the config asks for.
    assert (agent.base_path / lb.lb_id / "servers-state").read_text().startswith("1\n")


def test_rejected_upload_changes_nothing_and_old_config_keeps_serving(running_lb, http_backend):
    agent, lb = running_lb
    before = snapshot(agent.base_path)
    pid = master_pid(agent, lb.lb_id)

    error = expect_error(400, "Invalid request", agent.client.upload_config, lb.lb_id, BAD_CONFIG)
    assert "unknown keyword 'this_is_not_a_keyword'" in error.details

    assert snapshot(agent.base_path) == before  # byte-identical, no temp file left
    assert agent.client.get_config(lb.lb_id).body == lb.text
    assert fetch(lb.port) == f"backend {http_backend.port}\n"
    agent.client.reload(lb.lb_id)
    assert master_pid(agent, lb.lb_id) == pid
    assert fetch(lb.port)


def test_rejected_first_upload_leaves_no_directory(agent_factory):
    agent = agent_factory()
    lb_id = str(uuid.uuid4())
    expect_error(400, "Invalid request", agent.client.upload_config, lb_id, BAD_CONFIG)
    assert not (agent.base_path / lb_id).exists()
    expect_error(404, "Loadbalancer Not Found", agent.client.get_config, lb_id)


def test_unknown_lb_and_unknown_action(agent_factory):
    agent = agent_factory()
    client = agent.client
    lb_id = str(uuid.uuid4())
    error = expect_error(404, "Loadbalancer Not Found", client.get_config, lb_id)
    assert error.details == f"No loadbalancer with UUID: {lb_id}"
    for action in ("start", "stop", "reload"):
        expect_error(404, "Loadbalancer Not Found", client.lb_action, lb_id, action)
    error = expect_error(400, "Invalid Request", client.lb_action, lb_id, "explode")
    assert error.details == "Unknown action: explode"


def test_start_failure_is_500_with_haproxy_output(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    with socket.socket() as taken:  # a plain listener: haproxy cannot share its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        lb = lb_config(agent, http_backend.port, port=taken.getsockname()[1])
        agent.client.upload_config(lb.lb_id, lb.text)
        error = expect_error(500, "Error starting haproxy", agent.client.start, lb.lb_id)
        assert "cannot bind socket" in error.details
        error = expect_error(500, "Error starting haproxy", agent.client.reload, lb.lb_id)
    assert agent.client.get_listeners()[0]["status"] == "STOPPED"


def test_reload_that_haproxy_refuses_is_500_and_keeps_serving(running_lb, pki, free_port):
    """A config valid at upload can stop being valid (its certificate deleted since): the
    reload is refused with haproxy's message and the running haproxy is left alone."""
    agent, lb = running_lb
    client = agent.client
    client.upload_cert(lb.lb_id, "www.pem", pki.ca.issue("www.example.com").bundle)
    crt = agent.cert_dir / lb.lb_id / "www.pem"
    tls_port = free_port()
    config = lb.text.replace(
        f"    bind 127.0.0.1:{lb.port}\n",
        f"    bind 127.0.0.1:{lb.port}\n    bind 127.0.0.1:{tls_port} ssl crt {crt}\n")
    client.upload_config(lb.lb_id, config)
    client.reload(lb.lb_id)
    pid = master_pid(agent, lb.lb_id)

    client.delete_cert(lb.lb_id, "www.pem")
    error = expect_error(500, "Error reloading haproxy", client.reload, lb.lb_id)
    assert "www.pem" in error.details
    assert master_pid(agent, lb.lb_id) == pid
    assert fetch(lb.port)


def test_a_push_checks_once_but_a_changed_file_is_checked_again(running_lb):
    """The reload after an upload skips haproxy -c only while the files haproxy accepted are
    unchanged: a config changed behind the agent's back is checked, and refused, at reload."""
    agent, lb = running_lb
    client = agent.client
    client.upload_config(lb.lb_id, lb.text)
    client.reload(lb.lb_id)  # checked at upload
    pid = master_pid(agent, lb.lb_id)
    config_file = agent.base_path / lb.lb_id / "haproxy.cfg"
    config_file.write_text(lb.text + "frontend broken\n    bind-nonsense\n")
    error = expect_error(500, "Error reloading haproxy", client.reload, lb.lb_id)
    assert "bind-nonsense" in error.details
    assert master_pid(agent, lb.lb_id) == pid
    assert fetch(lb.port)


def test_dead_haproxy_that_cannot_start_again_is_reported_as_error(running_lb, pki, free_port):
    """A killed haproxy is started again (haproxy_restart.py); one whose config stopped being
    valid (its certificate deleted since) fails every automatic start until the start limit,
    and is then reported ERROR until a start through the API."""
    agent, lb = running_lb
    client = agent.client
    client.upload_cert(lb.lb_id, "www.pem", pki.ca.issue("www.example.com").bundle)
    crt = agent.cert_dir / lb.lb_id / "www.pem"
    config = lb.text.replace(
        f"    bind 127.0.0.1:{lb.port}\n",
        f"    bind 127.0.0.1:{lb.port}\n    bind 127.0.0.1:{free_port()} ssl crt {crt}\n")
    client.upload_config(lb.lb_id, config)
    client.reload(lb.lb_id)
    client.delete_cert(lb.lb_id, "www.pem")

    master = psutil.Process(master_pid(agent, lb.lb_id))
    for process in [master, *master.children()]:
        process.kill()
    assert poll_until(lambda: "start request repeated too quickly" in agent.log(), timeout=30.0)
    assert "did not start again" in agent.log()
    assert refuses(lb.port)
    assert [entry["status"] for entry in agent.client.get_listeners()] == ["ERROR"]
    assert agent.client.get_details()["haproxy_count"] == 0
    time.sleep(0.5)
    assert refuses(lb.port)  # given up: not tried again

    client.upload_cert(lb.lb_id, "www.pem", pki.ca.issue("www.example.com").bundle)
    agent.client.start(lb.lb_id)
    assert fetch(lb.port)
    assert agent.client.get_listeners()[0]["status"] == "ACTIVE"


def test_delete_removes_everything_and_is_idempotent(running_lb):
    agent, lb = running_lb
    client = agent.client
    client.upload_cert(lb.lb_id, "some.pem", b"/nonexistent/some.pem\n")
    pid = master_pid(agent, lb.lb_id)
    stats_socket = agent.base_path / f"{lb.lb_id}.sock"
    assert stats_socket.exists()

    assert client.delete_lb(lb.lb_id) == {"message": "OK"}
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert refuses(lb.port)
    assert not (agent.base_path / lb.lb_id).exists()
    assert not (agent.cert_dir / lb.lb_id).exists()
    assert not stats_socket.exists()
    assert client.get_listeners() == []
    assert client.delete_lb(lb.lb_id) == {"message": "OK"}
    expect_error(404, "Loadbalancer Not Found", client.get_config, lb.lb_id)


def test_delete_does_not_remove_a_non_socket_named_as_stats_socket(agent_factory, lb_config,
                                                                    http_backend, tmp_path):
    agent = agent_factory()
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    lb = lb_config(agent, http_backend.port)
    text = lb.text.replace(f"stats socket {agent.base_path}/{lb.lb_id}.sock",
                           f"stats socket {precious}")
    agent.client.upload_config(lb.lb_id, text)
    agent.client.delete_lb(lb.lb_id)
    assert precious.read_text() == "keep me"


def test_ids_must_be_uuid_shaped(agent_factory, lb_config, http_backend):
    agent = agent_factory()
    client = agent.client
    lb = lb_config(agent, http_backend.port)
    before = snapshot(agent.directory)
    for bad in ("not-a-uuid", "..", "..%2F..%2Fetc", "%00", lb.lb_id + "x", lb.lb_id[:-1]):
        with pytest.raises(AmphoraAPIError) as caught:
            client.upload_config(bad, lb.text)
        assert caught.value.status in (400, 404)
        with pytest.raises(AmphoraAPIError) as caught:
            client.request("PUT", f"/1.0/loadbalancer/{bad}/{lb.lb_id}/haproxy", data=lb.text)
        assert caught.value.status in (400, 404)
        for call in (client.get_config, client.start, client.delete_lb):
            with pytest.raises(AmphoraAPIError) as caught:
                call(bad)
            assert caught.value.status == 404
    # Nothing was created anywhere (the agent's own log aside).
    after = snapshot(agent.directory)
    after.pop("agent.log")
    before.pop("agent.log")
    assert after == before


def test_oversized_body_is_413(agent_factory):
    agent = agent_factory(max_request_body_bytes=4096)
    lb_id = str(uuid.uuid4())
    expect_error(413, "Request Entity Too Large", agent.client.upload_config, lb_id,
                 "#" * 5000 + "\n")

    def chunked():  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"#" * 1000

    expect_error(413, "Request Entity Too Large", agent.client.request, "PUT",
                 f"/1.0/loadbalancer/{agent.amphora_id}/{lb_id}/haproxy", data=chunked())
    assert not (agent.base_path / lb_id).exists()


def test_concurrent_requests_on_one_lb_are_serialized(running_lb):
    agent, lb = running_lb
    client = agent.client
    variants = [lb.text.replace("maxconn 4000\n    bind", f"maxconn {4000 + i}\n    bind")
                for i in range(6)]
    errors: list[BaseException] = []

    def work(text: str) -> None:
        try:
            client.upload_config(lb.lb_id, text)
            client.reload(lb.lb_id)
            client.get_config(lb.lb_id)
        except Exception as exc:  # reported below, on the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(text,)) for text in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert client.get_config(lb.lb_id).body in variants
    assert fetch(lb.port)
    # Exactly one haproxy process tree for this config: the master the pid file names.
    config_path = str(agent.base_path / lb.lb_id / "haproxy.cfg")
    tree = [p for p in psutil.process_iter(["cmdline"]) if config_path in (p.info["cmdline"] or [])]
    roots = [p.pid for p in tree if p.ppid() not in {q.pid for q in tree}]
    assert roots == [master_pid(agent, lb.lb_id)]
    assert not list((agent.base_path / lb.lb_id).glob(".*.tmp"))


def test_agent_restart_adopts_running_haproxy(running_lb):
    agent, lb = running_lb
    client = agent.client
    pid = master_pid(agent, lb.lb_id)
    workers = sorted(p.pid for p in psutil.Process(pid).children())
    listeners, config = client.get_listeners(), client.get_config(lb.lb_id)
    count = client.get_details()["haproxy_count"]
    # A temp file a crash left behind is cleaned up at start.
    stale = agent.base_path / lb.lb_id / ".haproxy.cfg.crash.tmp"
    stale.write_text("half written")

    os.kill(agent.process.pid, signal.SIGKILL)
    agent.process.wait(10)
    assert fetch(lb.port)  # haproxy does not depend on the agent
    agent.start()

    assert client.get_listeners() == listeners
    assert client.get_config(lb.lb_id) == config
    assert client.get_details()["haproxy_count"] == count
    assert master_pid(agent, lb.lb_id) == pid
    assert sorted(p.pid for p in psutil.Process(pid).children()) == workers
    assert not stale.exists()
    assert fetch(lb.port)
    # And it still controls it.
    client.reload(lb.lb_id)
    assert master_pid(agent, lb.lb_id) == pid
    client.stop(lb.lb_id)
    assert refuses(lb.port)
