"""Fixtures for tests that run the agent as a real process on this host.

- `pki`: a lab PKI (CA, driver certificate) in a temp directory.
- `agent_factory(**options)`: starts `amphora-agent --config-file FILE` on 127.0.0.1 with its own
  base path, waits until it answers over mutual TLS and returns a RunningAgent. At teardown it
  kills every agent it started and every process (haproxy, keepalived, ...) whose command line
  names one of their directories, then removes the directories and the network namespaces the
  agents created.
- `lb_config`: renders a minimal haproxy.cfg that follows the driver's naming convention.
- `http_backend`: a small HTTP server on loopback for haproxy to forward to.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from amphora_agent import netns
from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import AmphoraCredentials, LabPKI
from harness.lab.agent_config import AgentSettings, render_agent_config
from tests.support.netns_lab import NetnsLab

AGENT_READY_TIMEOUT_S = 20.0
PROCESS_EXIT_TIMEOUT_S = 10.0


def _free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: ports bind(0) hands out are
    also what every outgoing connection and every other test on this host picks from, so one
    of those could take it before haproxy binds it."""
    low, _high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(100):
        port = random.randrange(10000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found")


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A function returning a loopback TCP port that is free right now."""
    return _free_port


def agent_command() -> list[str]:
    """The console script installed next to this interpreter (pip install -e .)."""
    script = Path(sys.executable).with_name("amphora-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "amphora_agent"]


def _probe_context(pki: LabPKI) -> ssl.SSLContext:
    """The readiness probe's TLS context: the driver's certificate, and no opinion on the
    server's (tests start agents with wrong certificates on purpose)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(pki.driver.client_pem))
    return context


@dataclass
class RunningAgent:
    """One agent process and what a test needs to talk to it and look at its files."""

    amphora_id: str
    port: int
    directory: Path
    config_path: Path
    base_path: Path
    cert_dir: Path
    log_path: Path
    credentials: AmphoraCredentials
    client: AmphoraClient
    probe_context: ssl.SSLContext
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    _log_handles: list = field(default_factory=list)

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._log_handles.append(log)
        self.process = subprocess.Popen(
            [*agent_command(), "--config-file", str(self.config_path), "--log-level", "DEBUG"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"agent exited with {self.process.returncode}:\n{self.log()}")
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=2, context=self.probe_context)
            try:
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.05)
        pytest.fail(f"agent did not answer within {AGENT_READY_TIMEOUT_S} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the agent only: what it started keeps running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(PROCESS_EXIT_TIMEOUT_S)
        for handle in self._log_handles:
            handle.close()
        self._log_handles.clear()

    def restart(self) -> None:
        self.kill()
        self.start()

    def kill_everything(self) -> None:
        """SIGKILL the agent and everything it started (haproxy, keepalived, their scripts):
        the processes a crash of the whole amphora takes down."""
        self.kill()
        _kill_processes_using(self.directory)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _kill_processes_using(directory: Path) -> None:
    """Kill every process whose command line names a file under directory."""
    prefix = str(directory)
    victims = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(arg.startswith(prefix) for arg in cmdline):
            with contextlib.suppress(psutil.Error):
                process.kill()
                victims.append(process)
    # Killed daemons are not our children: nobody may reap them, so a zombie counts as gone
    # (psutil.wait_procs would wait for the zombie to disappear).
    deadline = time.monotonic() + PROCESS_EXIT_TIMEOUT_S
    while victims and time.monotonic() < deadline:
        victims = [p for p in victims if _alive(p)]
        time.sleep(0.02)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    """Test-made networks on this host (tests/support/netns_lab.py), all removed when the test ends.
    (Scenario suites get a whole Lab under this name from harness.pytest_plugin instead.)"""
    with NetnsLab() as running:
        yield running


@pytest.fixture
def pki(tmp_path: Path) -> LabPKI:
    return LabPKI(tmp_path / "pki")


@pytest.fixture
def agent_factory(pki: LabPKI) -> Iterator[Callable[..., RunningAgent]]:
    """agent_factory(amphora_id=None, network_namespace="", max_request_body_bytes=None,
    server_pem=None, extra=None, client_options=None, host="127.0.0.1", port=None,
    **settings) -> RunningAgent

    settings are AgentSettings fields (topology, controllers, heartbeat_interval, ...); extra
    adds INI options: {"section": {"option": "value"}}. server_pem replaces the server
    certificate the PKI issues for the amphora id (e.g. one with another CN).
    """
    agents: list[RunningAgent] = []
    created_namespaces: list[str] = []

    def start_agent(
        amphora_id: str | None = None,
        network_namespace: str = "",
        max_request_body_bytes: int | None = None,
        server_pem: Path | None = None,
        extra: dict[str, dict[str, str]] | None = None,
        client_options: dict | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        **settings,
    ) -> RunningAgent:
        amphora_id = amphora_id or str(uuid.uuid4())
        # Short paths: haproxy stats sockets live here and UNIX socket paths are limited.
        directory = Path(tempfile.mkdtemp(prefix="ah-agent-"))
        # haproxy's workers (user nobody) run scripts under base_path, as on an amphora.
        directory.chmod(0o755)
        credentials = pki.amphora(amphora_id)
        if server_pem is not None:
            credentials = AmphoraCredentials(ca=credentials.ca, server_pem=server_pem)
        options = {section: dict(values) for section, values in (extra or {}).items()}
        if max_request_body_bytes is not None:
            options.setdefault("amphora_agent", {})["max_request_body_bytes"] = str(
                max_request_body_bytes)
        port = port or _free_port()
        base_path = directory / "octavia"
        agent_settings = AgentSettings(
            amphora_id=amphora_id,
            ca_path=str(credentials.ca),
            server_pem_path=str(credentials.server_pem),
            bind_host=host,
            bind_port=port,
            base_path=str(base_path),
            base_cert_dir=str(base_path / "certs"),
            network_namespace=network_namespace,
            haproxy_cmd=shutil.which("haproxy") or "/usr/sbin/haproxy",
            extra=options,
            **settings,
        )
        config_path = directory / "amphora-agent.conf"
        config_path.write_text(render_agent_config(agent_settings))
        if network_namespace and not netns.namespace_exists(network_namespace):
            created_namespaces.append(network_namespace)
        client = AmphoraClient(
            host, port, amphora_id, pki.driver,
            **{"retries": 5, "retry_interval": 0.2, "retry_deadline": 10.0,
               **(client_options or {})},
        )
        agent = RunningAgent(
            amphora_id=amphora_id, port=port, directory=directory, config_path=config_path,
            base_path=base_path, cert_dir=base_path / "certs", log_path=directory / "agent.log",
            credentials=credentials, client=client, probe_context=_probe_context(pki), host=host,
        )
        agents.append(agent)
        agent.start()
        return agent

    yield start_agent

    for agent in agents:
        agent.kill()
        agent.client.close()
        _kill_processes_using(agent.directory)
        shutil.rmtree(agent.directory, ignore_errors=True)
    for namespace in created_namespaces:
        if netns.namespace_exists(namespace):
            subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


# --- haproxy configs and a backend for them to serve -------------------------------------------


@dataclass(frozen=True)
class LbConfig:
    lb_id: str
    listener_id: str
    pool_id: str
    member_id: str
    port: int
    text: str


@pytest.fixture
def lb_config() -> Callable[..., LbConfig]:
    """lb_config(agent, backend_port, lb_id=None, port=None, mode="http", extra_global="")
    renders a haproxy.cfg with one listener on 127.0.0.1:port forwarding to the backend."""

    def render(
        agent: RunningAgent,
        backend_port: int,
        *,
        lb_id: str | None = None,
        port: int | None = None,
        mode: str = "http",
        extra_global: str = "",
    ) -> LbConfig:
        lb_id = lb_id or str(uuid.uuid4())
        listener_id, pool_id, member_id = (str(uuid.uuid4()) for _ in range(3))
        port = port or _free_port()
        text = f"""# Configuration for loadbalancer {lb_id}
global
    daemon
    maxconn 4000
    stats socket {agent.base_path}/{lb_id}.sock mode 0666 level user
    server-state-file {agent.base_path}/{lb_id}/servers-state
{extra_global}
defaults
    retries 3
    option redispatch
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend {listener_id}
    maxconn 4000
    bind 127.0.0.1:{port}
    mode {mode}
    default_backend {pool_id}:{listener_id}

backend {pool_id}:{listener_id}
    mode {mode}
    load-server-state-from-file global
    server {member_id} 127.0.0.1:{backend_port} weight 1
"""
        return LbConfig(lb_id, listener_id, pool_id, member_id, port, text)

    return render


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        delay = min(float(query.get("delay", ["0"])[0]), 10.0)
        if delay:
            time.sleep(delay)
        body = f"backend {self.server.server_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


class HttpBackend(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # haproxy closing an idle keep-alive connection on reload is not an error

    @property
    def port(self) -> int:
        return self.server_address[1]


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    """An HTTP server on 127.0.0.1 that answers GET (`?delay=seconds` answers late)."""
    server = HttpBackend(("127.0.0.1", 0), _BackendHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
