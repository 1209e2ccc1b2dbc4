"""What the netns provider has made on this host, written down so that any process can find it.

A lab of the netns provider has no engine to ask, so its record is the truth: another process
(`amphora-harness status`, `gc` after a crash) rebuilds everything from it. One JSON file per lab,

    <root>/<lab id>/state.json      owner, keep, lab index, bridges, nodes, ports
    <root>/<lab id>/nodes/<name>/   a node's own /etc and /var/lib (overlay upper dirs), its log

written under one lock for the whole root (index choice must be atomic across labs). A name is
recorded before the object it names is made, so a crash in between leaves a record that teardown
can act on, never an object nobody knows.

Link names are limited to 15 bytes, too short for the amphora-harness prefix and a lab id:
links are `ah<8 hex of the lab id's hash>` + `b<n>` (bridges) or `v<n>` (veth pairs, host end).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from harness.lab.providers.base import ProviderError

STATE_ROOT = Path("/run/amphora-harness/netns")
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
LINK_NAME_MAX = 15
# Locally administered unicast; the other four bytes are the port's IPv4 address, so a port
# keeps its MAC when it is made again (after a restart) and two ports never share one.
MAC_PREFIX = "02:61"


def link_prefix(lab_id: str) -> str:
    return "ah" + hashlib.sha256(lab_id.encode()).hexdigest()[:8]


def bridge_name(lab_id: str, number: int) -> str:
    return _link_name(lab_id, "b", number)


def veth_name(lab_id: str, number: int) -> str:
    return _link_name(lab_id, "v", number)


def _link_name(lab_id: str, kind: str, number: int) -> str:
    name = f"{link_prefix(lab_id)}{kind}{number}"
    if len(name) > LINK_NAME_MAX:
        raise ProviderError(f"lab {lab_id} has run out of link names ({name} is too long)")
    return name


def is_lab_link(lab_id: str, name: str) -> bool:
    """Whether a host link name is one the provider makes for this lab."""
    return re.fullmatch(rf"{link_prefix(lab_id)}[bv]\d+", name) is not None


def mac_for(address: IPv4Address) -> str:
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in address.packed)


@dataclass
class BridgeRecord:
    role: str
    name: str
    subnet: str
    gateway: str
    dynamic_range: str


@dataclass
class NodeRecord:
    name: str  # also the name of its network namespace on the host
    role: str
    hostname: str
    argv: list[str]  # what runs as the node's init (under tini), inside its namespaces
    init: str | None = None  # owner token ("pid:start time") of the running init, on the host
    pid_namespace: str | None = None  # readlink of the running init's /proc/PID/ns/pid


@dataclass
class PortRecord:
    node: str
    network: str  # the network's role
    link: str  # the host end of the veth pair (on the bridge)
    ifname: str  # the node's end, as it appears in the node's default namespace
    mac_address: str
    ip_address: str
    # The node's first port gets its address from the provider (a VM's boot-time DHCP);
    # hot-plugged ports are left for the agent to configure, as Octavia's cloud leaves them.
    configured: bool = False


@dataclass
class LabState:
    lab_id: str
    owner: str
    keep: bool
    index: int
    bridges: list[BridgeRecord] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    ports: list[PortRecord] = field(default_factory=list)
    links_made: int = 0  # numbers links, so a name is never reused within a lab

    @classmethod
    def from_dict(cls, data: dict) -> LabState:
        return cls(
            **{k: v for k, v in data.items() if k not in ("bridges", "nodes", "ports")},
            bridges=[BridgeRecord(**b) for b in data["bridges"]],
            nodes=[NodeRecord(**n) for n in data["nodes"]],
            ports=[PortRecord(**p) for p in data["ports"]],
        )

    def next_link(self) -> int:
        self.links_made += 1
        return self.links_made

    def bridge(self, role: str) -> BridgeRecord:
        for bridge in self.bridges:
            if bridge.role == role:
                return bridge
        raise ProviderError(f"lab {self.lab_id} has no {role} network")

    def node(self, name: str) -> NodeRecord:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ProviderError(f"lab {self.lab_id} has no node {name}")

    def ports_of(self, node: str) -> list[PortRecord]:
        return [port for port in self.ports if port.node == node]

    def port_by_mac(self, node: str, mac_address: str) -> PortRecord:
        for port in self.ports_of(node):
            if port.mac_address == mac_address.lower():
                return port
        raise ProviderError(f"{node} has no interface with MAC {mac_address}")

    def allocate_address(self, role: str) -> IPv4Address:
        """The lowest address of the network's dynamic range that no port holds."""
        taken = {port.ip_address for port in self.ports}
        for address in IPv4Network(self.bridge(role).dynamic_range).hosts():
            if str(address) not in taken:
                return address
        raise ProviderError(f"the {role} network of lab {self.lab_id} has no free address")

    def next_ifname(self, node: str) -> str:
        """eth<n> after the node's highest one, as an engine names a newly attached interface."""
        numbers = [int(p.ifname.removeprefix("eth")) for p in self.ports_of(node)]
        return f"eth{max(numbers, default=-1) + 1}"


class StateStore:
    """The records of every lab under root. Reads are lock-free (files are replaced whole);
    every change happens in update() under the root's lock."""

    def __init__(self, root: Path = STATE_ROOT) -> None:
        self.root = root

    def lab_dir(self, lab_id: str) -> Path:
        return self.root / lab_id

    def node_dir(self, lab_id: str, node: str) -> Path:
        return self.lab_dir(lab_id) / "nodes" / node

    def lab_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(path.parent.name for path in self.root.glob(f"*/{STATE_FILE}"))

    def load(self, lab_id: str) -> LabState | None:
        try:
            return LabState.from_dict(json.loads(
                (self.lab_dir(lab_id) / STATE_FILE).read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"the record of netns lab {lab_id} is unreadable: {exc}") from exc

    def get(self, lab_id: str) -> LabState:
        state = self.load(lab_id)
        if state is None:
            raise ProviderError(f"no netns lab {lab_id} on this host")
        return state

    def all(self) -> list[LabState]:
        return [state for lab_id in self.lab_ids() if (state := self.load(lab_id))]

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def update(self, lab_id: str) -> Iterator[LabState]:
        """The lab's state, saved when the block ends without an exception."""
        with self.locked():
            state = self.get(lab_id)
            yield state
            self.save(state)

    def save(self, state: LabState) -> None:
        """Write a state (callers hold the lock)."""
        directory = self.lab_dir(state.lab_id)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state), indent=1))
        temporary.replace(path)
