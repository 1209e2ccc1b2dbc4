"""The netns provider: a lab on this host's kernel alone, no container engine.

Networks are Linux bridges on the host (the host holds each gateway address, as with Docker);
nodes are network namespaces named after the node (so every one carries the amphora-harness
prefix), each running its init in fresh mount, pid, UTS and IPC namespaces (see netns_node):
an amphora runs the same amphora-init, agent, haproxy and keepalived as the image, from the
host's Debian packages and the installed package. A port is a veth pair: the host end on the
bridge, the node end in the node's default namespace with a MAC derived from its address.

Faults are namespace operations: kill = SIGKILL the node's pid 1 (the kernel takes every other
process of its pid namespace with it), stop = SIGTERM to it (amphora-init's graceful path),
pause = SIGSTOP to every process of the node, a cut link = the host end of the veth going down.
A killed or stopped node keeps its network namespace and its /etc and /var/lib; start brings
back the ports that went with its data-plane namespace and boots its init again.

Everything is recorded under /run/amphora-harness/netns (see netns_state) before it is made,
so teardown and gc (from any process) find it all: processes, namespaces, links, firewall rules.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from ipaddress import IPv4Address, IPv4Network

import psutil

from harness.lab.providers import netns_node
from harness.lab.providers.base import (
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
    owner_alive,
    owner_pid,
    owner_token,
)
from harness.lab.providers.netns_state import (
    BridgeRecord,
    LabState,
    NodeRecord,
    PortRecord,
    StateStore,
    bridge_name,
    is_lab_link,
    mac_for,
    veth_name,
)

IMAGE_PREFIX = "netns:"
NETNS_DIR = "/run/netns"
# Programs a node needs on this host, with the Debian package that brings each.
REQUIRED_PROGRAMS = {
    "haproxy": "haproxy", "keepalived": "keepalived", "tini": "tini", "ip": "iproute2",
    "tc": "iproute2", "ss": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
    "mount": "mount", "pkill": "procps", "hostname": "hostname", "awk": "mawk",
    "socat": "socat", "nft": "nftables",
}
# Docker sets the FORWARD policy to DROP, and with br_netfilter loaded bridged frames pass
# iptables' FORWARD chain: each lab bridge gets an accept rule, marked with this comment.
FIREWALL_COMMENT = "amphora-harness netns lab {lab_id}"
LINK_MAKE_ATTEMPTS = 5
PAUSE_SWEEPS = 3


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _ip(*args: str) -> str:
    result = _run(["ip", *args])
    if result.returncode != 0:
        raise ProviderError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _signal(name: str) -> signal.Signals:
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


def running_init(store: StateStore, lab_id: str, node_name: str) -> psutil.Process | None:
    """The node's pid 1 on the host, if the node runs."""
    record = store.get(lab_id).node(node_name)
    if not record.init or not owner_alive(record.init):
        return None
    init = psutil.Process(owner_pid(record.init))
    return init if netns_node.alive(init) else None


def find_node(store: StateStore, node_name: str) -> tuple[str, NodeRecord]:
    """(lab id, record) of a node known only by its name (unique: names carry the lab id)."""
    for state in store.all():
        for node in state.nodes:
            if node.name == node_name:
                return state.lab_id, node
    raise ProviderError(f"no netns node {node_name} on this host")


class NetnsProvider(Provider):
    name = "netns"

    def __init__(self, store: StateStore | None = None) -> None:
        if os.geteuid() != 0:
            raise ProviderError("the netns provider needs root (it makes namespaces, bridges "
                                "and mounts)")
        self.store = store or StateStore()
        self.owner = owner_token()
        # The launchers this process started: reaped, so no zombie of ours outlives a node.
        self._launchers: list[subprocess.Popen] = []

    # networks

    def create_network(self, spec: NetworkSpec, *, keep: bool = False) -> Network:
        with self.store.locked():
            others = [s for s in self.store.all() if s.lab_id != spec.lab_id]
            if any(s.index == spec.lab_index for s in others) or _subnet_in_use(spec.subnet):
                raise AddressSpaceTaken(f"{spec.subnet} is in use")
            state = self.store.load(spec.lab_id) or LabState(
                lab_id=spec.lab_id, owner=self.owner, keep=keep, index=spec.lab_index)
            bridge = BridgeRecord(
                role=spec.role, name=bridge_name(spec.lab_id, state.next_link()),
                subnet=str(spec.subnet), gateway=str(spec.gateway),
                dynamic_range=str(spec.dynamic_range))
            state.bridges.append(bridge)
            self.store.save(state)
            # A bridge without a MAC of its own takes its ports' lowest, and a MAC change
            # flushes the host's neighbour entries on it (a port leaving would lose the VIP's).
            _ip("link", "add", bridge.name, "address", mac_for(spec.gateway), "type", "bridge")
            _ip("addr", "add", f"{spec.gateway}/{spec.subnet.prefixlen}", "dev", bridge.name)
            _ip("link", "set", bridge.name, "up")
            _firewall("-I", bridge.name, spec.lab_id)
        return Network(spec=spec, name=f"amphora-harness-{spec.lab_id}-{spec.role}",
                       handle=bridge.name)

    # nodes

    def ensure_image(self, name: str) -> str:
        if name not in netns_node.IMAGE_ENTRIES:
            raise ProviderError(f"no such image: {name}")
        path = netns_node.node_environment()["PATH"]
        missing = {program: package for program, package in REQUIRED_PROGRAMS.items()
                   if shutil.which(program, path=path) is None}
        if missing:
            raise ProviderError(
                f"the netns provider runs nodes on this host's programs; missing: "
                f"{', '.join(sorted(missing))} (apt-get install "
                f"{' '.join(sorted(set(missing.values())))})")
        if name == "amphora" and shutil.which("amphora-agent", path=path) is None:
            raise ProviderError("no amphora-agent next to this python (pip install -e .)")
        return f"{IMAGE_PREFIX}{name}"

    def boot(self, spec: NodeSpec, *, keep: bool = False) -> Node:
        image = spec.image.removeprefix(IMAGE_PREFIX)
        if not spec.image.startswith(IMAGE_PREFIX) or image not in netns_node.IMAGE_ENTRIES:
            raise ProviderError(f"the netns provider runs this host's agent and member server, "
                                f"not the image {spec.image} (images are for the docker "
                                f"provider)")
        argv = [*netns_node.IMAGE_ENTRIES[image], *(spec.command or ())]
        with self.store.update(spec.lab_id) as state:
            if any(node.name == spec.name for node in state.nodes):
                raise ProviderError(f"{spec.name} exists")
            state.nodes.append(NodeRecord(name=spec.name, role=spec.role,
                                          hostname=spec.hostname, argv=argv))
            port = _new_port(state, spec.name, spec.network.spec.role, spec.address, "eth0",
                             configured=True)
        node_dir = self.store.node_dir(spec.lab_id, spec.name)
        netns_node.prepare_node_dir(
            node_dir, netns_node.identity_files(spec.hostname, str(spec.address)), mode=0o644)
        netns_node.prepare_node_dir(node_dir, spec.files)
        _ip("netns", "add", spec.name)
        _ip("-n", spec.name, "link", "set", "lo", "up")
        self._make_port(state, port)
        self._start_init(spec.lab_id, spec.name)
        return Node(spec=spec, handle=spec.name)

    def remove_node(self, node: Node) -> None:
        lab_id = node.spec.lab_id
        state = self.store.get(lab_id)
        self._destroy_node(lab_id, state.node(node.name))
        self._forget_ports(lab_id, state.ports_of(node.name))
        with self.store.update(lab_id) as state:
            state.nodes = [n for n in state.nodes if n.name != node.name]
        shutil.rmtree(self.store.node_dir(lab_id, node.name), ignore_errors=True)

    def _make_port(self, state: LabState, port: PortRecord) -> None:
        bridge = state.bridge(port.network)
        # The node's end is made inside its namespace, so it never shows up on the host.
        _ip("link", "add", port.link, "type", "veth", "peer", "name", port.ifname,
            "address", port.mac_address, "netns", port.node)
        _ip("link", "set", port.link, "master", bridge.name, "up")
        if port.configured:
            prefix = IPv4Network(bridge.subnet).prefixlen
            _ip("-n", port.node, "addr", "add", f"{port.ip_address}/{prefix}",
                "dev", port.ifname)
            _ip("-n", port.node, "link", "set", port.ifname, "up")

    def _start_init(self, lab_id: str, name: str) -> None:
        record = self.store.get(lab_id).node(name)
        node_dir = self.store.node_dir(lab_id, name)
        command = netns_node.init_command(
            f"{NETNS_DIR}/{name}", node_dir, record.hostname, record.argv)
        with (node_dir / netns_node.CONSOLE_LOG).open("ab") as log:
            launcher = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT,
                                        env=netns_node.node_environment(),
                                        start_new_session=True)
        self._launchers.append(launcher)
        try:
            init = netns_node.wait_for_init(psutil.Process(launcher.pid))
        except (ProviderError, psutil.NoSuchProcess) as exc:
            raise ProviderError(f"{name} did not start; its log:\n"
                                f"{self._log(lab_id, name)[-2000:]}") from exc
        with self.store.update(lab_id) as state:
            node = state.node(name)
            node.init = owner_token(init.pid)
            node.pid_namespace = netns_node.namespace_id(init.pid, "pid")

    def attach_port(self, node: Node, network: Network) -> AttachedPort:
        lab_id, role = node.spec.lab_id, network.spec.role
        with self.store.update(lab_id) as state:
            if any(port.network == role for port in state.ports_of(node.name)):
                raise ProviderError(f"{node.name} is already attached to {network.name}")
            port = _new_port(state, node.name, role, state.allocate_address(role),
                             state.next_ifname(node.name), configured=False)
        try:
            self._make_port(state, port)
        except ProviderError:
            self._forget_ports(lab_id, [port])
            raise
        return AttachedPort(network=network, mac_address=port.mac_address,
                            ip_address=IPv4Address(port.ip_address))

    def detach_port(self, node: Node, network: Network) -> None:
        ports = [port for port in self.store.get(node.spec.lab_id).ports_of(node.name)
                 if port.network == network.spec.role]
        if not ports:
            raise ProviderError(f"{node.name} is not attached to {network.name}")
        self._forget_ports(node.spec.lab_id, ports)

    def _forget_ports(self, lab_id: str, ports: list[PortRecord]) -> None:
        for port in ports:
            _delete_link(port.link)  # takes the node's end with it, wherever it is now
        with self.store.update(lab_id) as state:
            state.ports = [p for p in state.ports if p not in ports]

    def exec(self, node: Node, argv: list[str]) -> ExecResult:
        init = self._init(node)
        result = subprocess.run(netns_node.enter_command(init.pid, argv),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=netns_node.node_environment(),
                                check=False)
        return ExecResult(result.returncode, result.stdout.decode(errors="replace"))

    def logs(self, node: Node) -> str:
        return self._log(node.spec.lab_id, node.name)

    def _log(self, lab_id: str, name: str) -> str:
        path = self.store.node_dir(lab_id, name) / netns_node.CONSOLE_LOG
        return path.read_text(errors="replace") if path.exists() else ""

    def is_running(self, node: Node) -> bool:
        self._reap()
        return running_init(self.store, node.spec.lab_id, node.name) is not None

    def _init(self, node: Node) -> psutil.Process:
        init = running_init(self.store, node.spec.lab_id, node.name)
        if init is None:
            raise ProviderError(f"{node.name} is not running")
        return init

    def testinfra_backend(self, node: Node) -> str:
        return f"netns://{node.name}"

    def interactive_argv(self, node: Node, argv: list[str]) -> list[str]:
        init = running_init(self.store, node.spec.lab_id, node.name)
        if init is None:
            raise ProviderError(f"{node.name} is not running")
        return ["nsenter", "-t", str(init.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]

    def _reap(self) -> None:
        self._launchers = [launcher for launcher in self._launchers if launcher.poll() is None]

    # engine-level faults

    def kill(self, node: Node, signal: str = "SIGKILL") -> None:
        init = self._init(node)
        signum = _signal(signal)
        init.send_signal(signum)
        if signum == _signal("SIGKILL"):
            # The init's exit completes only after every process of its pid namespace is gone.
            self._wait_down(node, init, 0.0)

    def stop(self, node: Node, timeout_s: float = 10.0) -> None:
        init = running_init(self.store, node.spec.lab_id, node.name)
        if init is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            init.send_signal(_signal("SIGTERM"))
        self._wait_down(node, init, timeout_s)

    def _wait_down(self, node: Node, init: psutil.Process, grace_s: float) -> None:
        if netns_node.wait_gone([init], grace_s):
            with contextlib.suppress(psutil.NoSuchProcess):
                init.kill()
        if netns_node.wait_gone([init]):
            raise ProviderError(f"{node.name} did not die (pid {init.pid})")
        self._reap()

    def start(self, node: Node) -> None:
        if self.is_running(node):
            return
        state = self.store.get(node.spec.lab_id)
        present = _link_macs(node.name)
        for port in state.ports_of(node.name):
            if present.get(port.ifname) != port.mac_address:
                # It went down with the node's data-plane namespace: the cloud plugs it again.
                self._remake_port(state, port)
        self._start_init(node.spec.lab_id, node.name)

    def _remake_port(self, state: LabState, port: PortRecord) -> None:
        # The kernel removes the pair of a dead namespace in its own time; ours may be its.
        for attempt in range(LINK_MAKE_ATTEMPTS):
            _delete_link(port.link)
            try:
                self._make_port(state, port)
                return
            except ProviderError:
                if attempt == LINK_MAKE_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def pause(self, node: Node) -> None:
        init = self._init(node)
        namespace = self.store.get(node.spec.lab_id).node(node.name).pid_namespace or ""
        stopped: set[int] = set()
        # A process may fork while the others are being stopped: sweep until none is new.
        for _ in range(PAUSE_SWEEPS):
            fresh = [p for p in netns_node.node_processes(init, namespace)
                     if p.pid not in stopped]
            if not fresh:
                return
            netns_node.send(fresh, signal.SIGSTOP)
            stopped.update(p.pid for p in fresh)

    def unpause(self, node: Node) -> None:
        init = self._init(node)
        namespace = self.store.get(node.spec.lab_id).node(node.name).pid_namespace or ""
        netns_node.send(netns_node.node_processes(init, namespace), signal.SIGCONT)

    def disconnect(self, node: Node, mac_address: str) -> None:
        self._set_host_link(node, mac_address, "down")

    def reconnect(self, node: Node, mac_address: str) -> None:
        self._set_host_link(node, mac_address, "up")

    def _set_host_link(self, node: Node, mac_address: str, state: str) -> None:
        port = self.store.get(node.spec.lab_id).port_by_mac(node.name, mac_address)
        _ip("link", "set", "dev", port.link, state)

    # hygiene

    def teardown(self, lab_id: str) -> None:
        state = self.store.load(lab_id)
        if state is None:
            return
        for node in state.nodes:
            self._destroy_node(lab_id, node)
        links = {port.link for port in state.ports} | {b.name for b in state.bridges}
        links |= {name for name in _host_links() if is_lab_link(lab_id, name)}
        for link in sorted(links):
            _delete_link(link)
        for bridge in state.bridges:
            _firewall("-D", bridge.name, lab_id)
        self._reap()
        with self.store.locked():
            shutil.rmtree(self.store.lab_dir(lab_id), ignore_errors=True)

    def _destroy_node(self, lab_id: str, node: NodeRecord) -> None:
        """Kill every process of the node (its pid namespace, and whatever else sits in its
        network namespace), then remove the namespace."""
        victims = []
        init = running_init(self.store, lab_id, node.name)
        if init is not None:
            victims += netns_node.node_processes(init, node.pid_namespace or "")
        with contextlib.suppress(FileNotFoundError):
            inode = os.stat(f"{NETNS_DIR}/{node.name}").st_ino
            victims += netns_node.processes_in("net", f"net:[{inode}]")
        netns_node.send(victims, signal.SIGKILL)
        self._reap()
        left = netns_node.wait_gone(victims)
        if left:
            raise ProviderError(f"processes of {node.name} survive SIGKILL: "
                                f"{', '.join(str(p.pid) for p in left)}")
        result = _run(["ip", "netns", "del", node.name])
        if result.returncode != 0 and "No such file" not in result.stderr:
            raise ProviderError(f"ip netns del {node.name}: {result.stderr.strip()}")

    def labs(self) -> list[LabOwnership]:
        return [LabOwnership(lab_id=s.lab_id, owner=s.owner, keep=s.keep)
                for s in self.store.all()]

    def used_lab_indexes(self) -> set[int]:
        return {state.index for state in self.store.all()}


def _new_port(state: LabState, node: str, role: str, address: IPv4Address, ifname: str, *,
              configured: bool) -> PortRecord:
    port = PortRecord(node=node, network=role, link=veth_name(state.lab_id, state.next_link()),
                      ifname=ifname, mac_address=mac_for(address), ip_address=str(address),
                      configured=configured)
    state.ports.append(port)
    return port


def _subnet_in_use(subnet: IPv4Network) -> bool:
    """Whether an address or route of this host overlaps subnet (another lab, Docker's
    networks, anything else)."""
    addresses = json.loads(_ip("-j", "-4", "addr", "show"))
    for link in addresses:
        for info in link.get("addr_info", []):
            network = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if network.overlaps(subnet):
                return True
    for route in json.loads(_ip("-j", "-4", "route", "show")):
        destination = route.get("dst", "")
        if destination != "default" and ipaddress.ip_network(destination, strict=False) \
                .overlaps(subnet):
            return True
    return False


def _host_links() -> list[str]:
    return [link["ifname"] for link in json.loads(_ip("-j", "link", "show"))]


def _link_macs(namespace: str) -> dict[str, str]:
    """ifname -> MAC of the links in a namespace."""
    return {link["ifname"]: link.get("address", "")
            for link in json.loads(_ip("-n", namespace, "-j", "link", "show"))}


def _delete_link(name: str) -> None:
    result = _run(["ip", "link", "del", name])
    if result.returncode != 0 and "Cannot find device" not in result.stderr:
        raise ProviderError(f"ip link del {name}: {result.stderr.strip()}")


def _firewall(action: str, bridge: str, lab_id: str) -> None:
    """Insert (-I) or delete (-D) the accept rule of a lab bridge in FORWARD. A host without
    iptables has no FORWARD policy to get past; deleting a rule that is not there is fine."""
    if shutil.which("iptables") is None:
        return
    result = _run(["iptables", "-w", action, "FORWARD", "-i", bridge, "-o", bridge,
                   "-m", "comment", "--comment", FIREWALL_COMMENT.format(lab_id=lab_id),
                   "-j", "ACCEPT"])
    if result.returncode != 0 and action == "-I":
        raise ProviderError(f"iptables: {result.stderr.strip()}")
