"""The agent under attack, round two: each case is one way a client without a certificate, or a
careless controller, could lock the agent, brick it, or tear its state; against a real agent
process with the lab PKI on 127.0.0.1."""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
import selectors
import shutil
import socket
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest

from amphora_agent.desired_state import DESIRED_STATE_FILE, DesiredState
from amphora_agent.services import KeyedLocks
from harness.amphora_api.client import AmphoraAPIError
from harness.observe.heartbeats import HeartbeatReceiver
from harness.polling import poll_until

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


# --- 1: idle connections without a certificate cannot lock the controller out -----------------

ATTACK_CONNECTIONS = 300  # more than the agent keeps waiting for a handshake
ATTACK_REOPENS = 200_000
LEGIT_REQUESTS = 20


class IdleConnections:
    """count TCP connections from source that never say a word, each opened again as soon as
    the agent closes it: in round one, 128 of these kept every certificate holder out."""

    def __init__(self, port: int, count: int, source: str) -> None:
        self._target = ("127.0.0.1", port)
        self._count = count
        self._source = source
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_open, daemon=True)
        self.reopened = 0

    def _open(self) -> None:
        sock = socket.socket()
        sock.bind((self._source, 0))
        sock.settimeout(5)
        try:
            sock.connect(self._target)
        except OSError:
            sock.close()
            return
        self._selector.register(sock, selectors.EVENT_READ)

    def _keep_open(self) -> None:
        while not self._stop.is_set() and self.reopened < ATTACK_REOPENS:
            for key, _ in self._selector.select(timeout=0.1):
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                self._open()
                self.reopened += 1
            for _ in range(self._count - len(self._selector.get_map())):
                self._open()

    def __enter__(self) -> IdleConnections:
        for _ in range(self._count):
            self._open()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.1"],
                         ids=["attacker-elsewhere", "attacker-on-the-same-address"])
def test_idle_connections_without_a_certificate_cannot_lock_the_driver_out(agent_factory,
                                                                           source):
    agent = agent_factory(client_options={"retries": 3, "retry_interval": 0.2})
    answered = 0
    with IdleConnections(agent.port, ATTACK_CONNECTIONS, source) as attack:
        for _ in range(LEGIT_REQUESTS):
            with contextlib.suppress(OSError, AmphoraAPIError):  # requests' errors are OSErrors
                answered += agent.client.version() == {"api_version": "1.0"}
        # The attack held: the agent had to cut the idle connections to make room.
        assert attack.reopened > 0
    assert answered == LEGIT_REQUESTS
    assert agent.process.poll() is None


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


# --- 3: no accepted config may keep the next start from serving --------------------------------


# id -> (section, option, value): each was accepted, and would have broken the agent's next start
# (no listening socket, no TLS, no namespace, no state directory, no haproxy to start).
# {dir} is the agent's directory, {busy_port} a port something else listens on.
BRICKING = {
    "read-timeout-overflows": ("amphora_agent", "agent_request_read_timeout", "1e300"),
    "body-limit-rounds-to-0": ("amphora_agent", "max_request_body_bytes", "0.5"),
    "address-not-here": ("haproxy_amphora", "bind_host", "192.0.2.1"),
    "port-taken": ("haproxy_amphora", "bind_port", "{busy_port}"),
    "no-certificate": ("amphora_agent", "agent_server_cert", "{dir}/none.pem"),
    "namespace-name": ("amphora_agent", "network_namespace", "../escape"),
    "relative-base": ("haproxy_amphora", "base_path", "octavia"),
    "unwritable-base": ("haproxy_amphora", "base_path", "/proc/octavia"),
    "no-haproxy": ("haproxy_amphora", "haproxy_cmd", "{dir}/haproxy"),
}


@pytest.mark.parametrize(("section", "option", "value"), BRICKING.values(), ids=BRICKING.keys())
def test_a_config_that_would_brick_the_next_start_is_refused(agent_factory, section, option,
                                                             value):
    agent = agent_factory()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        value = value.format(dir=agent.directory, busy_port=busy.getsockname()[1])
        original = agent.config_path.read_text()
        with pytest.raises(AmphoraAPIError) as caught:
            agent.client.update_agent_config(with_option(original, section, option, value))
    assert (caught.value.status, caught.value.message) == (500, CONFIG_ERROR)
    assert option in caught.value.details
    assert agent.config_path.read_text() == original
    agent.restart()
    assert agent.client.get_info()["uuid"] == agent.amphora_id


def test_the_config_that_repairs_a_small_body_limit_always_fits(agent_factory):
    """The smallest body limit accepted, then a config file larger than it: the one route that
    can raise the limit again is not held to it (other uploads are)."""
    agent = agent_factory()
    small = with_option(agent.config_path.read_text(), "amphora_agent",
                        "max_request_body_bytes", "1024")
    agent.client.update_agent_config(small)
    agent.restart()
    crt_list = b"/var/lib/octavia/certs/site.pem\n" * 64  # 2 KiB
    with pytest.raises(AmphoraAPIError) as caught:
        agent.client.upload_cert(str(uuid.uuid4()), "list.pem", crt_list)
    assert caught.value.status == 413
    repaired = with_option(small, "amphora_agent", "max_request_body_bytes", str(16 * MIB))
    repaired += "# " + "padding " * 512 + "\n"
    assert len(repaired) > 4 * 1024
    agent.client.update_agent_config(repaired)
    agent.restart()
    agent.client.upload_cert(str(uuid.uuid4()), "list.pem", crt_list)


# --- 4: refused connections cannot flood the log ------------------------------------------------

REFUSED = 300
SUMMARY = re.compile(r"refused (\d+) more connections")


def test_refused_connections_are_logged_in_aggregate(agent_factory):
    agent = agent_factory()
    logged_before = len(agent.log().splitlines())
    for _ in range(REFUSED):  # plain HTTP: each fails the TLS handshake
        with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as plain, \
                contextlib.suppress(ConnectionResetError):
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while plain.recv(4096):
                pass

    def flood_lines() -> list[str]:
        return agent.log().splitlines()[logged_before:]

    def accounted() -> int:
        """Refusals logged: one per line, or as many as a summary line counts."""
        return sum(int(match.group(1)) if (match := SUMMARY.search(line)) else 1
                   for line in flood_lines())

    # Each refusal is accounted for once its window is over (a summary comes at its end)...
    accounted_for_all = poll_until(lambda: accounted() >= REFUSED, 30)
    # ... by a handful of lines, not one each.
    assert len(flood_lines()) <= 6, "\n".join(flood_lines()[:10])
    assert accounted_for_all and accounted() == REFUSED, flood_lines()


# --- 5: a reload queued behind a delete must not bring the load balancer back ------------------

# haproxy with its config check slowed down: a reload holds the load balancer's lock that long,
# so the requests sent meanwhile queue behind it in the order they came. Each check leaves a
# line in a file, to show that the reload did check.
SLOW_CHECK_HAPROXY = """#!/bin/sh
case " $* " in *" -c "*) echo check >> {checks}; sleep 1 ;; esac
exec {haproxy} "$@"
"""
QUEUE_GAP_S = 0.3


def test_a_reload_queued_behind_a_delete_leaves_it_deleted(agent_factory, lb_config,
                                                           http_backend, tmp_path):
    slow = tmp_path / "haproxy"
    checks = tmp_path / "checks"
    slow.write_text(SLOW_CHECK_HAPROXY.format(haproxy=shutil.which("haproxy"), checks=checks))
    slow.chmod(0o755)
    agent = agent_factory(extra={"haproxy_amphora": {"haproxy_cmd": str(slow)}})
    client = agent.client
    lb = lb_config(agent, http_backend.port)
    client.upload_config(lb.lb_id, lb.text)
    client.lb_action(lb.lb_id, "start")
    # A reload skips its check while nothing the last check read changed; a new mtime on the
    # haproxy command (one of those inputs) makes the first reload check, slowly, holding the
    # load balancer's lock while the delete and the second reload queue behind it.
    stamp = slow.stat()
    os.utime(slow, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    checked_before = len(checks.read_text().splitlines())
    answers: dict[str, int] = {}

    def send(name: str, call) -> None:
        try:
            call()
            answers[name] = 200
        except AmphoraAPIError as exc:
            answers[name] = exc.status

    requests_in_order = {
        "first reload": lambda: client.lb_action(lb.lb_id, "reload"),
        "delete": lambda: client.delete_lb(lb.lb_id),
        "second reload": lambda: client.lb_action(lb.lb_id, "reload"),
    }
    threads = [threading.Thread(target=send, args=item) for item in requests_in_order.items()]
    for thread in threads:
        thread.start()
        time.sleep(QUEUE_GAP_S)
    for thread in threads:
        thread.join(60)
    assert len(checks.read_text().splitlines()) > checked_before, "the first reload did not check"
    assert answers["delete"] == 200
    # Either the second reload ran before the delete (and succeeded), or after it: a 404.
    assert answers["second reload"] in (200, 404), answers
    assert lb.lb_id not in DesiredState(agent.base_path / DESIRED_STATE_FILE).load()[
        "load_balancers"]
    # What that record did: a config uploaded again for the id, never started, ran after the
    # next restart.
    client.upload_config(lb.lb_id, lb.text)
    agent.restart()
    assert [listener["status"] for listener in client.get_listeners()] == ["STOPPED"]


# --- 6: what a kill -9 during a write leaves is removed at the next start, wherever it is -------


def leave_temp_file(target: Path, data: bytes) -> Path:
    """The temp file a write of target killed before its rename leaves (atomic_write's naming:
    a hidden file named after the target, mkstemp's random part, .tmp)."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return Path(name)


def test_a_restart_removes_temp_files_beside_the_server_certificate_and_the_config(
        agent_factory):
    agent = agent_factory()
    server_pem, config = agent.credentials.server_pem, agent.config_path
    # PUT /1.0/certificate writes the server's key and certificate beside the old ones; PUT
    # /1.0/config the agent's config file beside itself.
    leftovers = [leave_temp_file(server_pem, server_pem.read_bytes()),
                 leave_temp_file(config, b"[amphora_agent]\n")]
    # Files in those directories that no write of the agent's made stay.
    others = [leave_temp_file(server_pem.parent / "ca.pem", b"not the agent's"),
              leave_temp_file(config.parent / "notes", b"not the agent's")]
    agent.restart()
    assert [path for path in leftovers if path.exists()] == []
    assert all(path.exists() for path in others)
    assert agent.client.get_info()["uuid"] == agent.amphora_id


# --- 7: per-id state is bounded by the requests in flight, not by every id ever seen ----------


def test_load_balancer_locks_are_not_kept_for_ids_no_request_holds():
    """20,000 DELETEs of ids never seen again each took a lock: the table must not keep them."""
    locks = KeyedLocks()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            with locks.hold(str(uuid.uuid4())):
                pass
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024


def test_load_balancer_locks_still_serialize_requests_on_one_id():
    locks, inside, overlaps = KeyedLocks(), {"a": 0, "b": 0}, []

    def request(key: str) -> None:
        for _ in range(300):
            with locks.hold(key):
                inside[key] += 1
                if inside[key] > 1:
                    overlaps.append(key)
                time.sleep(0)
                inside[key] -= 1

    threads = [threading.Thread(target=request, args=(key,)) for key in "abababab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == []
    assert inside == {"a": 0, "b": 0}


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
