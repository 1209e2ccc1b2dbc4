"""The tests' light lab: networks made for one test in network namespaces of this host, with
no container engine and no images. A "VIP network" bridge in its own namespace, ports a cloud
would hot-plug (veth pairs whose amphora end sits in the default namespace with a known MAC),
client namespaces on the same bridge, and probes that run in them. Agents run beside it as
processes (tests/support/local_agent.py) and make their data-plane namespaces themselves.

The harness's Lab (harness.lab.lab) is the full one the scenario suites use: whole amphorae
(init, agent, haproxy, keepalived), members and clients as nodes of a provider (containers, or
network namespaces of their own with the netns provider), on lab networks, with a controller.
This one only gives a test a network to plug an agent into; tests/conftest.py hands it out as
the `lab` fixture.

Every name starts with amphora-harness- (namespaces) or ah<lab id> (links, whose names are
limited to 15 bytes), and close() removes all of it, whatever state a failed test left.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

NAMESPACE_PREFIX = "amphora-harness-"
BRIDGE = "br0"
PROBE_TIMEOUT_S = 3.0

# Run inside a namespace by the probes below: what a client there sees.
_TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("unreachable")
"""
_HTTP_GET = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as response:
        print(response.read().decode().strip())
except OSError as exc:
    print(f"error: {exc}")
"""


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def random_mac() -> str:
    """A locally administered unicast MAC."""
    return "02:" + ":".join(f"{byte:02x}" for byte in secrets.token_bytes(5))


@dataclass(frozen=True)
class Port:
    """A hot-plugged port: its name in the default namespace and its MAC."""

    name: str
    mac: str


class NetnsLab:
    def __init__(self) -> None:
        self.lab_id = secrets.token_hex(3)
        self.bridge_namespace = self.namespace("vipnet")
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self._counter = itertools.count(1)
        self._add_namespace(self.bridge_namespace)
        ip("-n", self.bridge_namespace, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.bridge_namespace, "link", "set", BRIDGE, "up")

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def namespace(self, role: str) -> str:
        """A namespace name of this lab (for agents too: they create it themselves)."""
        return f"{NAMESPACE_PREFIX}{self.lab_id}-{role}"

    def _add_namespace(self, name: str) -> None:
        self._namespaces.append(name)
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")

    def _bridged_veth(self, outer: str, inner: str) -> None:
        """A veth pair whose inner end is on the lab's bridge."""
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self._links.append(outer)
        ip("link", "set", inner, "netns", self.bridge_namespace)
        ip("-n", self.bridge_namespace, "link", "set", inner, "master", BRIDGE)
        ip("-n", self.bridge_namespace, "link", "set", inner, "up")

    def hot_plug(self, mac: str | None = None) -> Port:
        """A port on the VIP network, appearing in the default namespace as a cloud plugs it."""
        n = next(self._counter)
        port = Port(name=f"ah{self.lab_id}p{n}", mac=mac or random_mac())
        self._bridged_veth(port.name, f"b{n}")
        ip("link", "set", port.name, "address", port.mac)
        return port

    def add_client(self, address: str, gateway: str | None = None) -> str:
        """A client namespace on the VIP network with address (CIDR); returns its name."""
        n = next(self._counter)
        name = self.namespace(f"client{n}")
        self._add_namespace(name)
        outer = f"ah{self.lab_id}c{n}"
        self._bridged_veth(outer, f"b{n}")
        ip("link", "set", outer, "netns", name, "name", "eth0")
        # IPv6 without duplicate address detection: usable at once, not tentative for a second.
        nodad = ["nodad"] if ":" in address else []
        ip("-n", name, "addr", "add", address, "dev", "eth0", *nodad)
        ip("-n", name, "link", "set", "eth0", "up")
        if gateway:
            ip("-n", name, "route", "add", "default", "via", gateway)
        return name

    @contextlib.contextmanager
    def member_server(self, address: str, http_port: int, member_id: str) -> Iterator[str]:
        """harness.lab.member_server answering HTTP on address:http_port in a namespace of its own
        on the VIP network, for as long as the context lasts; yields member_id."""
        namespace = self.add_client(f"{address}/24")
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "harness.lab.member_server",
             "--id", member_id, "--bind", address, "--http-port", str(http_port),
             "--tcp-port", "0", "--udp-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            ready = process.stdout.readline() if process.stdout else ""
            assert '"ready": true' in ready, ready
            yield member_id
        finally:
            process.kill()
            process.wait(PROBE_TIMEOUT_S + 10)

    def _python_in(self, namespace: str, script: str, *args: str) -> str:
        argv = ["ip", "netns", "exec", namespace, sys.executable, "-c", script, *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True,
                              timeout=PROBE_TIMEOUT_S + 10).stdout.strip()

    def tcp_probe(self, namespace: str, host: str, port: int) -> str:
        """From namespace: "open", "refused" (an RST came back: host reachable) or
        "unreachable"."""
        return self._python_in(namespace, _TCP_PROBE, host, str(port), str(PROBE_TIMEOUT_S))

    def http_get(self, namespace: str, url: str) -> str:
        """From namespace: the body of GET url, or "error: ..."."""
        return self._python_in(namespace, _HTTP_GET, url, str(PROBE_TIMEOUT_S))

    def close(self) -> None:
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        # A port the agent moved into its namespace went with it; one still here goes now.
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
