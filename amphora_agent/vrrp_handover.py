"""Make-before-break VRRP handover when a MASTER amphora shuts down (amphora-init runs this).

A keepalived that stops sends one advertisement of priority 0 and deletes the VIP at once; the
BACKUP takes over Skew_Time later ((256 - priority) / 256 * advert_int, RFC 3768 / RFC 5798:
0.648 s at Octavia's backup priority 90 and 1 s interval). For that long nobody holds the VIP,
though clients still send to the old MASTER's MAC (their ARP caches point there until the new
MASTER's gratuitous ARP). So before keepalived goes, the departing MASTER keeps the VIP as a
host address on `lo` of the data-plane namespace, with arp_ignore=1: Linux accepts a packet for
an address on lo whatever interface it came in on (haproxy, bound to the VIP, keeps answering),
and with arp_ignore=1 it answers ARP only for addresses of the receiving interface, so it does
not claim the VIP once keepalived has deleted it from the VIP interface. arp_announce=2 keeps
the node's own ARP requests (sent while replying from the VIP) from naming the VIP as their
sender, which would also re-point neighbours' caches at this MAC.

The hold ends when the peer's first advertisement with priority > 0 arrives (it sends one the
moment it becomes MASTER, with its gratuitous ARPs), plus a short margin for those ARPs; it never
lasts longer than advert_int (Skew_Time is below it) plus a margin, and nothing here may keep the
amphora from stopping: every failure ends in the release, and amphora-init stops keepalived
itself afterwards if this did not.

Run as `python3 -m amphora_agent.vrrp_handover --config-file CONFIG`: it decides in the
amphora's own namespace (no keepalived config: a SINGLE amphora; keepalived not running or the
VIP not held: a BACKUP) and, only if there is something to hand over, runs itself again inside
the data-plane namespace under `ip netns exec` (python 3.11 has no os.setns), where the raw
socket, the sysctls and the lo addresses belong. Inside, it checks that it really is in that
namespace before changing anything, so the namespace it was started from (on the netns provider
the host's side of a node; in a test, the host's) is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import select
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from amphora_agent import iproute, netns
from amphora_agent.config import AgentConfig, ConfigError, load_config
from amphora_agent.keepalived import KeepalivedSupervisor, block_addresses
from amphora_agent.processes import alive, wait_for

VRRP_PROTOCOL = 112
VRRP_ADVERTISEMENT = 1
VRRP_MULTICAST = {socket.AF_INET: "224.0.0.18", socket.AF_INET6: "ff02::12"}
DEFAULT_ADVERT_INT_S = 1.0
# The longest hold, whatever advert_int says: amphora-init gives this module a few seconds.
MAX_ADVERT_WAIT_S = 3.0
# Beyond advert_int: the peer's advertisement is due at Skew_Time after our priority 0, below
# advert_int; this covers its scheduling and the wire.
ADVERT_WAIT_MARGIN_S = 0.2
# After the peer's advertisement: its gratuitous ARPs follow it at once; give clients' caches a
# moment to switch before this amphora stops answering.
GARP_MARGIN_S = 0.15
KEEPALIVED_EXIT_TIMEOUT_S = 2.0
# Bounds the reads of one hold: far more than the few advertisements it waits through.
MAX_PACKETS_READ = 10000
# Values that make the node answer ARP only for addresses of the receiving interface (1) and
# name the outgoing interface's own address as an ARP request's sender (2). `all` is enough:
# the kernel uses the larger of `all` and the interface's value.
ARP_SYSCTLS = {"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}
PROC_SYS = Path("/proc/sys")


def say(message: str) -> None:
    """One line on stdout (the amphora's console; tests read it)."""
    print(f"vrrp_handover: {message}", flush=True)


@dataclass(frozen=True)
class VrrpSettings:
    """What the handover needs from a keepalived config."""

    addresses: tuple[str, ...]  # what keepalived deletes when it stops (VIPs, excluded ones too)
    router_ids: frozenset[int]
    peers: frozenset[str]  # unicast_peer addresses; empty for multicast VRRP
    advert_int: float
    interface: str | None

    def families(self) -> set[int]:
        """The address families VRRP runs over: the peers' or, for multicast, the VIPs'."""
        return {_family(address) for address in (self.peers or self.addresses)}


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def parse_settings(config_text: str) -> VrrpSettings:
    """The handover's view of a keepalived.conf (Octavia's renders one vrrp_instance)."""
    addresses = (block_addresses(config_text, "virtual_ipaddress")
                 + block_addresses(config_text, "virtual_ipaddress_excluded"))
    intervals = [float(value) for value in re.findall(r"^\s*advert_int\s+([0-9.]+)\s*$",
                                                      config_text, re.MULTILINE)]
    router_ids = {int(value) for value in re.findall(r"^\s*virtual_router_id\s+(\d+)\s*$",
                                                     config_text, re.MULTILINE)}
    interface = re.search(r"^\s*interface\s+(\S+)\s*$", config_text, re.MULTILINE)
    return VrrpSettings(
        addresses=tuple(dict.fromkeys(addresses)),
        router_ids=frozenset(router_ids),
        peers=frozenset(block_addresses(config_text, "unicast_peer")),
        advert_int=max(intervals, default=DEFAULT_ADVERT_INT_S),
        interface=interface.group(1) if interface else None,
    )


def held_addresses(namespace: str, wanted: Iterable[str]) -> list[str]:
    """Those of wanted that sit on an interface other than lo in namespace ("" = this one)."""
    wanted = {ipaddress.ip_address(address) for address in wanted}
    held = []
    for link in iproute.ip_json(namespace, "addr", "show"):
        if link.get("ifname") == "lo":
            continue
        for info in link.get("addr_info", ()):
            address = ipaddress.ip_address(info["local"])
            if address in wanted:
                held.append(str(address))
    return held


def local_addresses(namespace: str) -> set[str]:
    return {str(ipaddress.ip_address(info["local"]))
            for link in iproute.ip_json(namespace, "addr", "show")
            for info in link.get("addr_info", ())}


def is_peer_advertisement(payload: bytes, source: str, settings: VrrpSettings,
                          own: set[str]) -> bool:
    """A VRRP (v2 or v3) advertisement for one of our router ids, with a priority above 0,
    from the peer: a unicast peer of the config, or (multicast VRRP) any address not ours.
    payload starts at the VRRP header."""
    if len(payload) < 8:
        return False
    version, kind = payload[0] >> 4, payload[0] & 0x0F
    if version not in (2, 3) or kind != VRRP_ADVERTISEMENT:
        return False
    if settings.router_ids and payload[1] not in settings.router_ids:
        return False
    source = source.split("%", 1)[0]  # an IPv6 link-local source carries its scope
    from_peer = source in settings.peers if settings.peers else source not in own
    return from_peer and payload[2] > 0


def vrrp_payload(family: int, packet: bytes) -> bytes:
    """The VRRP header of what a raw socket returned: IPv4 raw sockets include the IP header,
    IPv6 ones do not."""
    if family == socket.AF_INET:
        return packet[(packet[0] & 0x0F) * 4:] if packet else b""
    return packet


def open_listeners(settings: VrrpSettings) -> list[socket.socket]:
    """Raw protocol-112 sockets (NET_RAW) for VRRP's families; for multicast VRRP joined to its
    group, which keepalived joined until now. A family that cannot be opened is left out."""
    listeners = []
    for family in sorted(settings.families()):
        try:
            sock = socket.socket(family, socket.SOCK_RAW, VRRP_PROTOCOL)
        except OSError as exc:
            say(f"cannot open a raw VRRP socket ({exc.strerror}); holding for the full bound")
            continue
        if not settings.peers:
            with contextlib.suppress(OSError):
                _join_group(sock, family, settings.interface)
        listeners.append(sock)
    return listeners


def _join_group(sock: socket.socket, family: int, interface: str | None) -> None:
    index = socket.if_nametoindex(interface) if interface else 0
    group = socket.inet_pton(family, VRRP_MULTICAST[family])
    if family == socket.AF_INET:
        # struct ip_mreqn: group, local address (any), interface index.
        request = group + bytes(4) + index.to_bytes(4, sys.byteorder)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
    else:
        request = group + index.to_bytes(4, sys.byteorder)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)


def wait_for_peer(listeners: list[socket.socket], settings: VrrpSettings, own: set[str],
                  deadline: float) -> str | None:
    """The address of the peer once it advertises as MASTER, or None at the deadline. What
    arrived before the deadline is still read after it (keepalived may have been slow to
    exit); the packet budget bounds the loop whatever arrives."""
    for _ in range(MAX_PACKETS_READ):
        if not listeners:
            return None
        remaining = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select(listeners, [], [], remaining)
        if not readable:
            return None
        for sock in readable:
            try:
                packet, source = sock.recvfrom(4096)
            except OSError:
                continue
            if is_peer_advertisement(vrrp_payload(sock.family, packet), source[0], settings,
                                     own):
                return source[0]
    return None


def stop_keepalived(supervisor: KeepalivedSupervisor) -> bool:
    """SIGTERM keepalived (it sends its priority-0 advertisement and deletes the VIP) and wait
    for it and its children to exit; True if they did. No SIGKILL: a killed keepalived would
    leave the VIP on the interface; amphora-init goes on either way."""
    main = supervisor.main_process()
    if main is None:
        return True
    try:
        family = [main, *main.children(recursive=True)]
        main.terminate()
    except psutil.NoSuchProcess:
        return True
    return wait_for(lambda: not alive(family), KEEPALIVED_EXIT_TIMEOUT_S)


class Sysctls:
    """Set /proc/sys values in this namespace and put the old ones back."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._saved: dict[str, str] = {}

    def apply(self) -> None:
        for key, value in self._values.items():
            path = PROC_SYS / key
            self._saved[key] = path.read_text().strip()
            path.write_text(value)

    def restore(self) -> None:
        for key, value in self._saved.items():
            with contextlib.suppress(OSError):
                (PROC_SYS / key).write_text(value)


def _host_prefix(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


def hand_over(config: AgentConfig) -> str:
    """Inside the data-plane namespace: keep serving the VIPs this amphora holds while
    keepalived stops and the peer takes over; returns what happened, in a few words."""
    supervisor = KeepalivedSupervisor(config)
    settings = parse_settings(supervisor.config_path.read_text(errors="replace"))
    held = held_addresses("", settings.addresses)
    if not held or not supervisor.is_running():
        return "skipped: this amphora holds no VIP"
    own = local_addresses("")
    sysctls = Sysctls(ARP_SYSCTLS)
    on_lo: list[str] = []
    listeners: list[socket.socket] = []
    try:
        sysctls.apply()
        for address in held:
            iproute.ip("", "addr", "add", _host_prefix(address), "dev", "lo")
            on_lo.append(address)
        # Opened before keepalived stops, so that no advertisement can slip past.
        listeners = open_listeners(settings)
        started = time.monotonic()
        exited = stop_keepalived(supervisor)
        say(f"keepalived {'stopped' if exited else 'still running'}; holding "
            f"{', '.join(held)} on lo until the peer advertises")
        deadline = started + min(settings.advert_int, MAX_ADVERT_WAIT_S) + ADVERT_WAIT_MARGIN_S
        peer = wait_for_peer(listeners, settings, own, deadline)
        if peer is None:
            return "no advertisement from the peer within the bound; released"
        time.sleep(GARP_MARGIN_S)
        return f"peer {peer} advertised as MASTER; released"
    finally:
        for sock in listeners:
            sock.close()
        for address in on_lo:
            with contextlib.suppress(iproute.IPCommandError):
                iproute.ip("", "addr", "del", _host_prefix(address), "dev", "lo")
        sysctls.restore()


def in_named_namespace(namespace: str) -> bool:
    """True if this process's network namespace is the one /run/netns/<namespace> names."""
    try:
        named = os.stat(netns.NETNS_DIR / namespace)
        current = os.stat("/proc/self/ns/net")
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (current.st_dev, current.st_ino)


def decide(config: AgentConfig) -> str | None:
    """In the amphora's own namespace: why there is nothing to hand over, or None."""
    supervisor = KeepalivedSupervisor(config)
    if not config.network_namespace:
        return "skipped: no data-plane namespace configured"
    if not supervisor.configured():
        return "skipped: no keepalived config (SINGLE)"
    if not netns.namespace_exists(config.network_namespace):
        return "skipped: no data-plane namespace"
    if not supervisor.is_running():
        return "skipped: keepalived is not running"
    settings = parse_settings(supervisor.config_path.read_text(errors="replace"))
    if not held_addresses(config.network_namespace, settings.addresses):
        return "skipped: the VIP is not held here (BACKUP)"
    return None


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m amphora_agent.vrrp_handover",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", type=Path, required=True,
                        help="the agent's configuration file")
    parser.add_argument("--in-namespace", action="store_true",
                        help="(internal) running inside the data-plane namespace")
    args = parser.parse_args(argv)
    # A SIGTERM (amphora-init's timeout) still runs the release in hand_over's finally.
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        config = load_config(args.config_file)
        if not args.in_namespace:
            reason = decide(config)
            if reason is not None:
                say(reason)
                return 0
            os.execvp("ip", ["ip", "netns", "exec", config.network_namespace, sys.executable,
                             "-m", "amphora_agent.vrrp_handover",
                             "--config-file", str(args.config_file), "--in-namespace"])
        if not in_named_namespace(config.network_namespace):
            say(f"not inside namespace {config.network_namespace!r}; nothing changed")
            return 1
        say(hand_over(config))
        return 0
    except (ConfigError, OSError, iproute.IPCommandError, ValueError) as exc:
        say(f"failed, shutdown goes on: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
