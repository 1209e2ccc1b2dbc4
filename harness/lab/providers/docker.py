"""The docker provider: bridge networks are the lab's networks, containers its nodes.

Networks are `internal` bridges: the host still reaches every container through the bridge's
gateway address, but containers get no route out of the machine. A hot-plugged port is
`docker network connect` (the engine picks the address from the network's ip_range and derives
the MAC); a cut link is the host-side veth of that interface going down, set on the engine's host
(this one, or through the lab's fault node for an engine elsewhere: Provider.host_shell).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.types import IPAMConfig, IPAMPool, Ulimit

from harness.lab.host_shell import THIS_HOST, HostShell
from harness.lab.host_tables import remove_lab_tables
from harness.lab.images import ImageBuilder, ImageBuildError
from harness.lab.octavia_image import OctaviaImageBuilder
from harness.lab.providers.base import (
    INDEX_LABEL,
    KEEP_LABEL,
    LAB_LABEL,
    OWNER_LABEL,
    ROLE_LABEL,
    AddressSpaceTaken,
    AttachedPort,
    ExecResult,
    LabOwnership,
    Network,
    NetworkSpec,
    Node,
    NodeSpec,
    Provider,
    ProviderError,
    owner_token,
)
from harness.lab.providers.docker_testinfra import DockerApiBackend, remember_engine
from harness.lab.providers.fault_node import FaultNode
from harness.octavia_source import OctaviaSource

T = TypeVar("T")

# What the agent does in an amphora and what it takes:
#   ip netns add / ip netns exec   mount and unshare       -> SYS_ADMIN
#   move links, addresses, routes, rules                   -> NET_ADMIN
#   keepalived's VRRP and ping                             -> NET_RAW
#   sysctls inside the data-plane namespace (non-local bind): /proc/sys must be writable, which
#   docker only allows with `--security-opt systempaths=unconfined` (it mounts /proc/sys
#   read-only otherwise). That CLI option is the API's empty MaskedPaths and ReadonlyPaths.
# docker's default seccomp profile already admits mount/unshare/setns once SYS_ADMIN is granted,
# so neither --privileged nor an unconfined seccomp profile is needed.
AMPHORA_CAPABILITIES = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
AMPHORA_UNMASKED_PATHS = {"MaskedPaths": [], "ReadonlyPaths": []}
# Namespaces and pid files live under /run: a fresh tmpfs per boot, as on a VM.
AMPHORA_TMPFS = {"/run": "rw,mode=755"}
# haproxy raises its file limit to about 2 x maxconn (Octavia's default connection limit is
# 50,000 per listener, and Octavia's amphora allows haproxy 2,600,000 files); the kernel's
# usual ceiling (fs.nr_open) is 1,048,576.
AMPHORA_NOFILE = 1048576
# systemd as PID 1 (Octavia's amphora image) also wants /run/lock and the cgroup tree, and stops
# its units in order on SIGRTMIN+3 (the image's stop signal), which takes 5-16 s here.
SYSTEMD_TMPFS = {"/run/lock": "rw,mode=1777"}
SYSTEMD_BINDS = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}}
SYSTEMD_STOP_TIMEOUT_S = 30
# What a systemd node's log is: its journal (agent, haproxy, keepalived units) and the agent's
# own access/error log; `docker logs` of systemd shows nothing of them.
SYSTEMD_LOG_COMMAND = ("journalctl -b --no-pager 2>&1; echo '--- /var/log/amphora-agent.log'; "
                       "cat /var/log/amphora-agent.log 2>&1")

NETWORK_REMOVE_ATTEMPTS = 10
PEER_INDEX = re.compile(r"@if(\d+):.*?link/ether ([0-9a-f:]{17})", re.S)
# A line of `ip -o link`: "<index>: <name>[@<peer>]: <flags> ..."
LINK_NAME = re.compile(r"^(\d+): ([^:@\s]+)", re.M)


def _readable(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return exc.explanation or str(exc)
    return str(exc)


@contextmanager
def _engine(action: str) -> Iterator[None]:
    """Turn engine errors into one-line ProviderErrors that say what was being done."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise ProviderError(f"{action}: {_readable(exc)}") from exc


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o600
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _bridge_here(network_id: str) -> bool:
    """The engine names a network's bridge br-<first 12 of its id>: present here only when the
    engine runs in this host's network namespace. (The lab's addresses cannot tell: another
    engine's lab may hold the same block.)"""
    return Path("/sys/class/net", f"br-{network_id[:12]}").exists()


def _host_command(shell: HostShell, argv: list[str]) -> subprocess.CompletedProcess[str]:
    with _engine(f"running {argv[0]} on the lab's host"):
        return shell.run(argv)


def _ignore_missing(action: Callable[[], T]) -> T | None:
    try:
        return action()
    except docker.errors.NotFound:
        return None


class DockerProvider(Provider):
    name = "docker"

    def __init__(self, client: docker.DockerClient | None = None,
                 docker_host: str | None = None) -> None:
        """docker_host: the engine's URL (DOCKER_HOST syntax); None: the environment's. The
        environment's TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) apply either way."""
        self.docker_host = docker_host or os.environ.get("DOCKER_HOST")
        environment = dict(os.environ)
        if docker_host is not None:
            environment["DOCKER_HOST"] = docker_host
        with _engine(f"connecting to the Docker Engine {self.docker_host or '(local socket)'}"):
            self.client = client or docker.from_env(environment=environment)
            self.client.ping()
        self.owner = owner_token()
        self._nofile_allowed = True
        self._host_shells: dict[str, HostShell] = {}

    def _labels(self, lab_id: str, role: str, keep: bool) -> dict[str, str]:
        labels = {LAB_LABEL: lab_id, OWNER_LABEL: self.owner, ROLE_LABEL: role}
        if keep:
            labels[KEEP_LABEL] = "1"
        return labels

    # networks

    def create_network(self, spec: NetworkSpec, *, keep: bool = False) -> Network:
        name = f"amphora-harness-{spec.lab_id}-{spec.role}"
        pool = IPAMPool(
            subnet=str(spec.subnet), gateway=str(spec.gateway), iprange=str(spec.dynamic_range)
        )
        labels = self._labels(spec.lab_id, spec.role, keep) | {INDEX_LABEL: str(spec.lab_index)}
        try:
            network = self.client.networks.create(
                name, driver="bridge", internal=True, ipam=IPAMConfig(pool_configs=[pool]),
                labels=labels, check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if "overlap" in _readable(exc).lower():
                raise AddressSpaceTaken(f"{spec.subnet} is in use") from exc
            raise ProviderError(f"creating network {name}: {_readable(exc)}") from exc
        return Network(spec=spec, name=name, handle=network.id)

    def on_this_host(self, network: Network) -> bool:
        return _bridge_here(network.handle)

    def host_shell(self, lab_id: str) -> HostShell:
        """This host when the lab's bridges are here; else the lab's fault node on the engine,
        in the engine's host network namespace (harness.lab.providers.fault_node)."""
        shell = self._host_shells.get(lab_id)
        if shell is None:
            with _engine(f"looking up the networks of lab {lab_id}"):
                networks = self.client.networks.list(filters=self._lab_filter(lab_id))
            if all(_bridge_here(network.id) for network in networks):
                shell = THIS_HOST
            else:
                labels = {k: v for k, v in networks[0].attrs["Labels"].items()
                          if k != INDEX_LABEL}
                shell = self._fault_node(lab_id, labels)
            self._host_shells[lab_id] = shell
        return shell

    def _fault_node(self, lab_id: str, labels: dict[str, str]) -> FaultNode:
        """The lab's fault node on this engine (booted by its first command), of the amphora
        image."""
        return FaultNode(self.client, lab_id, labels, lambda: self.ensure_image("amphora"))

    # nodes

    def ensure_image(self, name: str) -> str:
        try:
            return ImageBuilder(self.client).ensure(name)
        except ImageBuildError as exc:
            raise ProviderError(str(exc)) from exc

    def ensure_octavia_image(self, source: OctaviaSource) -> str:
        try:
            return OctaviaImageBuilder(self.client).ensure(source)
        except ImageBuildError as exc:
            raise ProviderError(str(exc)) from exc

    def boot(self, spec: NodeSpec, *, keep: bool = False) -> Node:
        try:
            return self._boot(spec, keep, raise_nofile=spec.data_plane_privileges
                              and self._nofile_allowed)
        except ProviderError as exc:
            if "rlimit" not in str(exc):
                raise
        # The engine may not grant more open files than its own limit (a dockerd started with
        # LimitNOFILE=20000, say): boot with its default then, and say so once.
        self._nofile_allowed = False
        self._remove_container(spec.name)
        warnings.warn(f"the Docker Engine refuses nofile={AMPHORA_NOFILE}; amphorae get the "
                      "engine's default, which may be too low for haproxy's maxconn",
                      stacklevel=2)
        return self._boot(spec, keep, raise_nofile=False)

    def _boot(self, spec: NodeSpec, keep: bool, raise_nofile: bool) -> Node:
        api = self.client.api
        privileges = {}
        if spec.data_plane_privileges:
            privileges = {"cap_add": AMPHORA_CAPABILITIES, "tmpfs": dict(AMPHORA_TMPFS)}
        if spec.systemd_init:
            privileges.setdefault("tmpfs", {}).update(SYSTEMD_TMPFS)
            privileges["binds"] = SYSTEMD_BINDS
        if raise_nofile:
            privileges["ulimits"] = [Ulimit(name="nofile", soft=AMPHORA_NOFILE,
                                            hard=AMPHORA_NOFILE)]
        host_config = api.create_host_config(network_mode=spec.network.name, **privileges)
        if spec.data_plane_privileges:
            host_config.update(AMPHORA_UNMASKED_PATHS)
        with _engine(f"booting {spec.name}"):
            container = api.create_container(
                spec.image,
                command=list(spec.command) if spec.command else None,
                name=spec.name,
                hostname=spec.hostname,
                labels=self._labels(spec.lab_id, spec.role, keep),
                detach=True,
                stop_timeout=SYSTEMD_STOP_TIMEOUT_S if spec.systemd_init else None,
                host_config=host_config,
                networking_config=api.create_networking_config(
                    {spec.network.name: api.create_endpoint_config(
                        ipv4_address=str(spec.address))}
                ),
            )
            node = Node(spec=spec, handle=container["Id"])
            if spec.files:
                api.put_archive(node.handle, "/", _tar(spec.files))
            api.start(node.handle)
        return node

    def put_files(self, node: Node, files: dict[str, bytes]) -> None:
        with _engine(f"writing files into {node.name}"):
            self.client.api.put_archive(node.handle, "/", _tar(files))

    def remove_node(self, node: Node) -> None:
        self._remove_container(node.handle)

    def _remove_container(self, name: str) -> None:
        with _engine(f"removing {name}"):
            _ignore_missing(lambda: self.client.api.remove_container(name, force=True, v=True))

    def _container(self, node: Node):
        with _engine(f"looking up {node.name}"):
            return self.client.containers.get(node.handle)

    def attach_port(self, node: Node, network: Network) -> AttachedPort:
        with _engine(f"attaching {node.name} to {network.name}"):
            self.client.api.connect_container_to_network(node.handle, network.handle)
            settings = self._container(node).attrs["NetworkSettings"]["Networks"][network.name]
        return AttachedPort(network=network, mac_address=settings["MacAddress"],
                            ip_address=IPv4Address(settings["IPAddress"]))

    def detach_port(self, node: Node, network: Network) -> None:
        with _engine(f"detaching {node.name} from {network.name}"):
            self.client.api.disconnect_container_from_network(node.handle, network.handle)

    def exec(self, node: Node, argv: list[str]) -> ExecResult:
        with _engine(f"running {argv[0]} in {node.name}"):
            exit_code, output = self._container(node).exec_run(argv)
        return ExecResult(exit_code, output.decode(errors="replace"))

    def open_stream(self, node: Node, argv: list[str]) -> Any:
        with _engine(f"attaching to {argv[0]} in {node.name}"):
            started = self.client.api.exec_create(node.handle, argv, stdin=True)
            return self.client.api.exec_start(started["Id"], socket=True)

    def logs(self, node: Node) -> str:
        with _engine(f"reading the log of {node.name}"):
            container = self._container(node)
            if node.spec.systemd_init and container.status == "running":
                _, output = container.exec_run(["sh", "-c", SYSTEMD_LOG_COMMAND])
                return output.decode(errors="replace")
            return container.logs().decode(errors="replace")

    def is_running(self, node: Node) -> bool:
        return self._container(node).status == "running"

    def testinfra_backend(self, node: Node) -> str:
        remember_engine(node.handle, self.client)
        return f"{DockerApiBackend.NAME}://{node.handle}"

    def interactive_argv(self, node: Node, argv: list[str]) -> list[str]:
        engine = ["--host", self.docker_host] if self.docker_host else []
        return ["docker", *engine, "exec", "-it", node.handle, *argv]

    # engine-level faults

    def kill(self, node: Node, signal: str = "SIGKILL") -> None:
        with _engine(f"killing {node.name}"):
            self.client.api.kill(node.handle, signal=signal)

    def stop(self, node: Node, timeout_s: float = 10.0) -> None:
        if node.spec.systemd_init:
            timeout_s = max(timeout_s, SYSTEMD_STOP_TIMEOUT_S)
        with _engine(f"stopping {node.name}"):
            self.client.api.stop(node.handle, timeout=int(timeout_s))

    def start(self, node: Node) -> None:
        with _engine(f"starting {node.name}"):
            self.client.api.start(node.handle)

    def pause(self, node: Node) -> None:
        with _engine(f"pausing {node.name}"):
            self.client.api.pause(node.handle)

    def unpause(self, node: Node) -> None:
        with _engine(f"unpausing {node.name}"):
            self.client.api.unpause(node.handle)

    def disconnect(self, node: Node, mac_address: str) -> None:
        self._set_host_link(node, mac_address, "down")

    def reconnect(self, node: Node, mac_address: str) -> None:
        self._set_host_link(node, mac_address, "up")

    def _set_host_link(self, node: Node, mac_address: str, state: str) -> None:
        shell = self.host_shell(node.spec.lab_id)
        veth = self._host_veth(node, mac_address, shell)
        result = _host_command(shell, ["ip", "link", "set", "dev", veth, state])
        if result.returncode != 0:
            raise ProviderError(f"setting {veth} {state}: {result.stderr.strip()}")

    def _host_veth(self, node: Node, mac_address: str, shell: HostShell) -> str:
        """The host end of the veth whose container end has mac_address, wherever inside the
        node that end lives now (the agent moves data-plane interfaces into a namespace)."""
        listing = self.exec(node, ["sh", "-c", "ip -o link; ip -all netns exec ip -o link"])
        peers = {mac: int(index) for index, mac in PEER_INDEX.findall(listing.output)}
        index = peers.get(mac_address.lower())
        if index is None:
            raise ProviderError(f"{node.name} has no interface with MAC {mac_address}")
        host_links = _host_command(shell, ["ip", "-o", "link", "show"]).stdout
        for found, device in LINK_NAME.findall(host_links):
            if int(found) == index:
                return device
        raise ProviderError(f"no host interface has index {index} ({node.name} {mac_address})")

    # hygiene

    def _lab_filter(self, lab_id: str | None = None) -> dict[str, str]:
        return {"label": f"{LAB_LABEL}={lab_id}" if lab_id else LAB_LABEL}

    def teardown(self, lab_id: str) -> None:
        with _engine(f"tearing down lab {lab_id}"):
            # Link faults on an engine elsewhere live in its host's namespace, reached through
            # the lab's fault node: their tables go before the node does.
            shell = self._host_shells.pop(lab_id, None) or self._fault_node(lab_id, {})
            if isinstance(shell, FaultNode) and shell.exists():
                remove_lab_tables(lab_id, shell=shell)
            # sparse: no inspect per container, which races with other labs' teardown.
            for container in self.client.containers.list(all=True, sparse=True,
                                                         filters=self._lab_filter(lab_id)):
                _ignore_missing(lambda c=container: c.remove(force=True, v=True))
            for network in self.client.networks.list(filters=self._lab_filter(lab_id)):
                self._remove_network(network)

    def _remove_network(self, network) -> None:
        # A container removed a moment ago can still hold an endpoint briefly.
        for attempt in range(NETWORK_REMOVE_ATTEMPTS):
            try:
                _ignore_missing(network.remove)
                return
            except docker.errors.APIError as exc:
                if "active endpoints" not in _readable(exc) or \
                        attempt == NETWORK_REMOVE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def labs(self) -> list[LabOwnership]:
        found: dict[str, LabOwnership] = {}
        with _engine("listing labs"):
            objects = [
                *self.client.containers.list(all=True, sparse=True, filters=self._lab_filter()),
                *self.client.networks.list(filters=self._lab_filter()),
            ]
            for obj in objects:
                labels = obj.attrs["Labels"]
                lab_id = labels[LAB_LABEL]
                found.setdefault(lab_id, LabOwnership(
                    lab_id=lab_id, owner=labels.get(OWNER_LABEL, ""),
                    keep=labels.get(KEEP_LABEL) == "1",
                ))
        return list(found.values())

    def used_lab_indexes(self) -> set[int]:
        with _engine("listing lab networks"):
            networks = self.client.networks.list(filters=self._lab_filter())
        return {int(n.attrs["Labels"][INDEX_LABEL]) for n in networks
                if INDEX_LABEL in (n.attrs.get("Labels") or {})}
