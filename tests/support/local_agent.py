"""The agent as a real process on this host, for tests that need no container engine: the
`amphora-agent` console script on 127.0.0.1 (or another loopback address) with a config file, a
base path and certificates of its own, talked to over mutual TLS with harness.amphora_api's
client. LocalAgents starts them and, at the end, removes everything they left: processes
(haproxy, keepalived, ...), directories and the network namespaces they created.

tests/conftest.py hands these out as the `agent_factory` fixture.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from amphora_agent import netns
from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import AmphoraCredentials, LabPKI
from harness.lab.agent_config import AgentSettings, render_agent_config
from harness.polling import poll_until
from harness.render.amphora_configs import AmphoraPaths

AGENT_READY_TIMEOUT_S = 20.0
PROCESS_EXIT_TIMEOUT_S = 10.0


def free_loopback_port() -> int:
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
        if not poll_until(self._answers, AGENT_READY_TIMEOUT_S):
            pytest.fail(f"agent did not answer within {AGENT_READY_TIMEOUT_S} s:\n{self.log()}")

    def _answers(self) -> bool:
        """GET / answers 200; an agent that exited fails the test at once, with its log."""
        if self.process.poll() is not None:
            pytest.fail(f"agent exited with {self.process.returncode}:\n{self.log()}")
        connection = http.client.HTTPSConnection(
            self.host, self.port, timeout=2, context=self.probe_context)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

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
        kill_processes_using(self.directory)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def amphora_paths(self) -> AmphoraPaths:
        """Where this agent keeps its files, as a controller renders them into configs."""
        return AmphoraPaths(base_path=str(self.base_path), base_cert_dir=str(self.cert_dir))


def kill_processes_using(directory: Path) -> None:
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
    poll_until(lambda: not any(_alive(p) for p in victims), PROCESS_EXIT_TIMEOUT_S)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class LocalAgents:
    """Agents started with one lab PKI; close() takes down all of them and what they made."""

    def __init__(self, pki: LabPKI) -> None:
        self.pki = pki
        self._agents: list[RunningAgent] = []
        self._created_namespaces: list[str] = []

    def start(
        self,
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
        """An agent that answers over mutual TLS. settings are AgentSettings fields (topology,
        controllers, heartbeat_interval, ...); extra adds INI options: {"section": {"option":
        "value"}}; server_pem replaces the server certificate the PKI issues for the amphora id
        (e.g. one with another CN); client_options are AmphoraClient options."""
        amphora_id = amphora_id or str(uuid.uuid4())
        # Short paths: haproxy stats sockets live here and UNIX socket paths are limited.
        directory = Path(tempfile.mkdtemp(prefix="ah-agent-"))
        # haproxy's workers (user nobody) run scripts under base_path, as on an amphora.
        directory.chmod(0o755)
        credentials = self.pki.amphora(amphora_id)
        if server_pem is not None:
            credentials = AmphoraCredentials(ca=credentials.ca, server_pem=server_pem)
        options = {section: dict(values) for section, values in (extra or {}).items()}
        if max_request_body_bytes is not None:
            options.setdefault("amphora_agent", {})["max_request_body_bytes"] = str(
                max_request_body_bytes)
        port = port or free_loopback_port()
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
            self._created_namespaces.append(network_namespace)
        client = AmphoraClient(
            host, port, amphora_id, self.pki.driver,
            **{"retries": 5, "retry_interval": 0.2, "retry_deadline": 10.0,
               **(client_options or {})},
        )
        agent = RunningAgent(
            amphora_id=amphora_id, port=port, directory=directory, config_path=config_path,
            base_path=base_path, cert_dir=base_path / "certs", log_path=directory / "agent.log",
            credentials=credentials, client=client, probe_context=_probe_context(self.pki),
            host=host,
        )
        self._agents.append(agent)
        agent.start()
        return agent

    def close(self) -> None:
        for agent in self._agents:
            agent.kill()
            agent.client.close()
            kill_processes_using(agent.directory)
            shutil.rmtree(agent.directory, ignore_errors=True)
        for namespace in self._created_namespaces:
            if netns.namespace_exists(namespace):
                subprocess.run(["ip", "netns", "del", namespace], check=False,
                               capture_output=True)
