"""Our agent and OpenStack Octavia's agent as processes on this host, side by side on loopback,
with one lab PKI: what the bench's agent axis (harness.bench.agent_axis) measures the API of.

Octavia's agent (the `amphora-agent` of `.venv-octavia`, gunicorn with one sync worker) expects
an amphora: it writes /etc/octavia/interfaces/lo.json when it starts, its access log to
/var/log/amphora-agent.log, systemd units to /usr/lib/systemd/system, and checks every upload
against /var/lib/octavia/haproxy-default-user-group.conf. It runs here in a private mount
namespace where /etc, /var/lib and the unit directory are overlays whose writable layers, and
/var/log, are directories of the run's own, and /run/netns a tmpfs (its /1.0/details creates the
network namespace amphora-haproxy when it is missing): the host's files stay untouched and
everything it wrote or created goes when the namespace's last process ends. `systemctl` is a
stub that succeeds (the host runs no systemd for it), so its PUT haproxy pays for no
`systemctl enable`: its figures here are, if anything, flattering to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.amphora_api.client import AmphoraClient
from harness.amphora_api.pki import LabPKI
from harness.lab.agent_config import AgentSettings, render_agent_config
from harness.paths import cache_dir

AGENTS = ("ours", "octavia")
# Octavia's agent takes seconds to import on a loaded machine; ours well under one.
READY_DEADLINE_S = 60.0
READY_POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
# What Debian's haproxy runs as on an amphora (Octavia's image writes the same file).
USER_GROUP_CFG = "global\n    group nogroup\n"


class HostAgentError(RuntimeError):
    """An agent could not be started; the message says which and why."""


@dataclass
class HostAgent:
    name: str
    client: AmphoraClient
    server_pem: Path
    process: subprocess.Popen
    log_path: Path


def free_port() -> int:
    """A loopback port free right now (the agent binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def octavia_agent_script() -> Path:
    return cache_dir() / ".venv-octavia" / "bin" / "amphora-agent"


def _octavia_command(work: Path, config: Path) -> list[str]:
    """unshare + a shell that mounts the overlays and execs Octavia's agent."""
    for layer in ("etc", "varlib", "units"):
        (work / f"{layer}-upper").mkdir()
        (work / f"{layer}-work").mkdir()
    (work / "log").mkdir()
    stubs = work / "bin"
    stubs.mkdir()
    (stubs / "systemctl").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "systemctl").chmod(0o755)

    def overlay(layer: str, target: str) -> str:
        return (f"mount -t overlay overlay -o lowerdir={target},upperdir={work}/{layer}-upper,"
                f"workdir={work}/{layer}-work {target}")

    script = "\n".join([
        "set -e",
        overlay("etc", "/etc"),
        overlay("varlib", "/var/lib"),
        overlay("units", "/usr/lib/systemd/system"),
        f"mount --bind {work}/log /var/log",
        # Its /1.0/details creates the namespace amphora-haproxy if missing: a private one.
        "mkdir -p /run/netns",
        "mount -t tmpfs tmpfs /run/netns",
        "mkdir -p /var/lib/octavia",
        f"printf '{USER_GROUP_CFG.replace(chr(10), chr(92) + 'n')}' "
        "> /var/lib/octavia/haproxy-default-user-group.conf",
        f"export PATH={stubs}:$PATH",
        f"exec {octavia_agent_script()} --config-file {config}",
    ])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _our_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "amphora_agent", "--config-file", str(config)]


def _start(name: str, pki: LabPKI, work: Path) -> HostAgent:
    work.mkdir()
    amphora_id = str(uuid.uuid4())
    credentials = pki.amphora(amphora_id)
    port = free_port()
    settings = AgentSettings(
        amphora_id=amphora_id, ca_path=str(credentials.ca),
        server_pem_path=str(credentials.server_pem), bind_host="127.0.0.1", bind_port=port,
        base_path=str(work / "octavia") if name == "ours" else "/var/lib/octavia",
        base_cert_dir=str(work / "octavia" / "certs") if name == "ours"
        else "/var/lib/octavia/certs",
        network_namespace="", haproxy_cmd=shutil.which("haproxy") or "/usr/sbin/haproxy")
    config = work / "amphora-agent.conf"
    config.write_text(render_agent_config(settings))
    command = _our_command(config) if name == "ours" else _octavia_command(work, config)
    log_path = work / "agent.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    client = AmphoraClient("127.0.0.1", port, amphora_id, pki.driver,
                           retries=int(READY_DEADLINE_S / READY_POLL_S),
                           retry_interval=READY_POLL_S, retry_deadline=READY_DEADLINE_S)
    agent = HostAgent(name, client, credentials.server_pem, process, log_path)
    try:
        agent.client.version()  # retried until the agent answers
    except Exception as exc:
        _stop(agent)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise HostAgentError(f"{name}'s agent did not answer: {exc}\n{tail}") from None
    return agent


def _stop(agent: HostAgent) -> None:
    """The agent's whole session (gunicorn's master and worker, Octavia's heartbeat sender)."""
    agent.client.close()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(agent.process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        agent.process.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # the session's stragglers too
        os.killpg(agent.process.pid, signal.SIGKILL)
    agent.process.wait(STOP_TIMEOUT_S)


@contextlib.contextmanager
def host_agents(names: tuple[str, ...]) -> Iterator[dict[str, HostAgent]]:
    """The named agents (AGENTS), running on loopback with one PKI, until the block ends."""
    unknown = sorted(set(names) - set(AGENTS))
    if unknown:
        raise HostAgentError(f"unknown agents {unknown}: known are {', '.join(AGENTS)}")
    if "octavia" in names and not octavia_agent_script().exists():
        raise HostAgentError(f"Octavia's agent is not installed: {octavia_agent_script()} "
                             "is missing (scripts/bootstrap makes .venv-octavia)")
    work = Path(tempfile.mkdtemp(prefix="ah-bench-agents-"))
    work.chmod(0o755)
    agents: dict[str, HostAgent] = {}
    try:
        pki = LabPKI(work / "pki")
        for name in names:
            agents[name] = _start(name, pki, work / name)
        yield agents
    finally:
        for agent in agents.values():
            _stop(agent)
        shutil.rmtree(work, ignore_errors=True)
