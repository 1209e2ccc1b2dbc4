"""The provider interface: what a lab needs from the place it runs in.

A provider stands in for Neutron and Nova. A network is a Neutron network with a subnet; booting
a node is booting a VM; attaching a port is a Neutron port hot-plugged into a running VM (it
returns the port's MAC and fixed IP, as a cloud would, and the agent is told about it afterwards
through plug/vip or plug/network). Fault hooks act from outside the node: engine operations
(kill, stop, pause, cutting a link) or signals to processes inside it.

The docker provider implements this, and so does the netns provider (plain network namespaces
for hosts without a container engine).

Hygiene: everything a provider creates carries LAB_LABEL=<lab id> (or, where labels do not exist,
a name derived from the lab id), plus OWNER_LABEL naming the process that owns the lab, so gc can
tell leftovers of crashed runs from labs that a live process still uses.
"""

from __future__ import annotations

import abc
import os
import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar

import psutil

from harness.lab.host_shell import THIS_HOST, HostShell
from harness.octavia_source import OctaviaSource

LAB_LABEL = "amphora-harness.lab"
OWNER_LABEL = "amphora-harness.owner"
# Set on labs started with --keep-lab: the plugin's start-of-session gc leaves them alone.
KEEP_LABEL = "amphora-harness.keep"
ROLE_LABEL = "amphora-harness.role"
INDEX_LABEL = "amphora-harness.index"


class ProviderError(RuntimeError):
    """An engine operation failed; the message is one readable line."""


class AddressSpaceTaken(ProviderError):
    """The subnet asked for overlaps one that exists (another lab, or something else)."""


@dataclass(frozen=True)
class NetworkSpec:
    """One lab network. The engine allocates ports (hot-plugged interfaces) only from
    dynamic_range; addresses outside it are the lab's to hand out (nodes, VIPs)."""

    lab_id: str
    role: str  # "lb-mgmt" | "vip" | "member"
    subnet: IPv4Network
    gateway: IPv4Address
    dynamic_range: IPv4Network
    lab_index: int


@dataclass(frozen=True)
class Network:
    spec: NetworkSpec
    name: str  # the provider's name for it
    handle: str  # the provider's id


@dataclass(frozen=True)
class NodeSpec:
    """A node (VM) to boot. files are written into its file system before it starts (config,
    certificates), so nothing from the host is shared with it."""

    lab_id: str
    role: str  # "amphora" | "member" | "client"
    name: str
    hostname: str
    image: str
    network: Network
    address: IPv4Address
    command: tuple[str, ...] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    # Amphorae: may create namespaces, move interfaces, set sysctls and send VRRP.
    data_plane_privileges: bool = False
    # The image's command is an init system (systemd as PID 1): it needs /run/lock, the cgroup
    # tree and a stop that gives it time to stop its units in order.
    systemd_init: bool = False


@dataclass(frozen=True)
class Node:
    spec: NodeSpec
    handle: str  # the provider's id (container id, ...)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class AttachedPort:
    """A hot-plugged interface: what a cloud reports for a new port."""

    network: Network
    mac_address: str
    ip_address: IPv4Address


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class LabOwnership:
    """Which labs exist and who owns them, as gc sees it."""

    lab_id: str
    owner: str
    keep: bool


def owner_token(pid: int | None = None) -> str:
    """'<host name>/<boot id>/<pid>:<start time>' of a process: the start time guards against
    pid reuse; host name and boot id say where pid and start time mean something (a lab on an
    engine several machines share carries the token of a process on one of them)."""
    process = psutil.Process(pid or os.getpid())
    return f"{_this_machine()}/{process.pid}:{process.create_time():.2f}"


def _this_machine() -> str:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot_id}"


def owner_alive(token: str) -> bool:
    """Whether the token's process still runs. A process of another machine cannot be looked at
    from here: it counts as alive, so gc leaves its labs (`gc --everything` takes them). Of this
    machine before a reboot, it is gone. A token with no machine part (older) is read as this
    machine's."""
    machine, slash, process = token.rpartition("/")
    if slash:
        host, _, boot_id = machine.partition("/")
        here_host, _, here_boot = _this_machine().partition("/")
        if host != here_host:
            return True
        if boot_id != here_boot:
            return False
    pid, _, started = process.partition(":")
    try:
        return owner_token(int(pid)).rpartition("/")[2] == f"{pid}:{started}"
    except (ValueError, psutil.Error):
        return False


def owner_pid(token: str) -> int:
    """The pid of an owner token (ValueError when it holds none)."""
    return int(token.rpartition("/")[2].partition(":")[0])


class Provider(abc.ABC):
    """Where a lab runs. Every method raises ProviderError with a readable message."""

    name: ClassVar[str]

    # networks

    @abc.abstractmethod
    def create_network(self, spec: NetworkSpec, *, keep: bool = False) -> Network:
        """Create it, or raise AddressSpaceTaken when its subnet is in use."""

    # nodes

    @abc.abstractmethod
    def ensure_image(self, name: str) -> str:
        """The reference of our image `name` ("amphora", "member"), built first if missing."""

    def ensure_octavia_image(self, source: OctaviaSource) -> str:
        """The image of Octavia's own amphora-agent from source, built first if missing."""
        raise ProviderError(f"Octavia's amphora-agent runs on the docker provider only, not on "
                            f"{self.name} (use --provider docker, or --agent ours)")

    def put_files(self, node: Node, files: dict[str, bytes]) -> None:
        """Write files into a running node."""
        raise ProviderError(f"the {self.name} provider cannot write files into a running node")

    @abc.abstractmethod
    def boot(self, spec: NodeSpec, *, keep: bool = False) -> Node:
        """Create the node, write spec.files into it, start it."""

    @abc.abstractmethod
    def remove_node(self, node: Node) -> None:
        """Delete the node and its ports (the VM is deleted); the rest of its lab stays."""

    @abc.abstractmethod
    def attach_port(self, node: Node, network: Network) -> AttachedPort:
        """Hot-plug a new interface on network into a running node; the engine picks its
        address from the network's dynamic range."""

    @abc.abstractmethod
    def detach_port(self, node: Node, network: Network) -> None:
        """Remove the node's interface on network (the cloud deletes the port)."""

    @abc.abstractmethod
    def exec(self, node: Node, argv: list[str]) -> ExecResult:
        """Run argv inside the node (its default namespace) and wait for it."""

    def on_this_host(self, network: Network) -> bool:
        """Whether network's bridge is on this host (so the harness reaches its nodes through
        the gateway address); the netns provider's always are."""
        return True

    def host_shell(self, lab_id: str) -> HostShell:
        """Where commands on the lab's host side run (nft for link faults, ip link for a cut):
        the namespace of its bridges. This host, for a provider whose labs are all here."""
        return THIS_HOST

    def open_stream(self, node: Node, argv: list[str]) -> Any:
        """Start argv inside the node with its stdin, stdout and stderr attached to the returned
        socket (Docker's multiplexed exec stream): how the harness reaches a lab that only the
        engine's API leads to (harness.lab.reach). Providers whose labs are always on this host
        have no need for it."""
        raise ProviderError(f"the {self.name} provider cannot relay connections into a lab; "
                            "its labs must be reachable from this host")

    @abc.abstractmethod
    def logs(self, node: Node) -> str:
        """The node's console output (the agent's log for an amphora)."""

    @abc.abstractmethod
    def is_running(self, node: Node) -> bool: ...

    @abc.abstractmethod
    def testinfra_backend(self, node: Node) -> str:
        """The pytest-testinfra host spec that runs commands inside node."""

    @abc.abstractmethod
    def interactive_argv(self, node: Node, argv: list[str]) -> list[str]:
        """The host command that runs argv inside node attached to this terminal (a shell)."""

    # engine-level faults

    @abc.abstractmethod
    def kill(self, node: Node, signal: str = "SIGKILL") -> None:
        """Signal the node's init (SIGKILL: the VM dies at once)."""

    @abc.abstractmethod
    def stop(self, node: Node, timeout_s: float = 10.0) -> None:
        """Graceful shutdown: SIGTERM, then SIGKILL after timeout_s."""

    @abc.abstractmethod
    def start(self, node: Node) -> None:
        """Start a stopped or killed node again (its file system is kept)."""

    @abc.abstractmethod
    def pause(self, node: Node) -> None:
        """Freeze every process of the node (a hung VM)."""

    @abc.abstractmethod
    def unpause(self, node: Node) -> None: ...

    @abc.abstractmethod
    def disconnect(self, node: Node, mac_address: str) -> None:
        """Cut the link of the node's interface with that MAC, from the outside (the switch
        port goes down); the node keeps the interface and its configuration."""

    @abc.abstractmethod
    def reconnect(self, node: Node, mac_address: str) -> None: ...

    # process-level faults

    def kill_process(self, node: Node, process_name: str, signal: str = "KILL") -> ExecResult:
        """Send signal to every process inside the node whose name is process_name."""
        return self.exec(node, ["pkill", f"-{signal}", "-x", process_name])

    # hygiene

    @abc.abstractmethod
    def teardown(self, lab_id: str) -> None:
        """Remove every node and network of the lab."""

    @abc.abstractmethod
    def labs(self) -> list[LabOwnership]:
        """Every lab that has something left in the engine."""

    @abc.abstractmethod
    def used_lab_indexes(self) -> set[int]:
        """Lab indexes whose networks exist (so a new lab picks another address block)."""

    def gc(self, *, include_kept: bool = True, everything: bool = False) -> list[str]:
        """Tear down labs whose owner process is gone (all labs with everything=True; kept labs
        only with include_kept). Returns the lab ids removed."""
        removed = []
        for lab in self.labs():
            if not everything and (owner_alive(lab.owner) or (lab.keep and not include_kept)):
                continue
            self.teardown(lab.lab_id)
            removed.append(lab.lab_id)
        return removed
