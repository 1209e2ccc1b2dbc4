"""Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6), as Octavia's agent
sends them, so that neighbours' caches learn at once which MAC an address is on now.

When Octavia 19's agent sends them (api_server/loadbalancer.py, plug.py):
- after a start or reload of a load balancer through the API, unless the topology is
  ACTIVE_STANDBY (keepalived announces the VIP there): one for every address of the config's
  `bind` lines;
- after plug/network (a new port or an update of a plugged one): one for every fixed IP of
  the port. Not after plug/vip.
Each goes out of the interface that carries the address in the data-plane namespace; an
address no interface carries, or a send that fails, is logged and skipped, never an error of
the request.

What goes on the wire (Octavia's own code, backends/utils/ip_advertisement.py, no arping):
- IPv4: one Ethernet broadcast ARP request whose sender and target address are both the
  address, sender hardware address the interface's MAC, target hardware address broadcast;
- IPv6: one ICMPv6 neighbour advertisement (type 136) from the address to ff02::1, hop limit
  255, flags Router and Override, with the interface's MAC as target link-layer address
  option. The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket.

Ours also skips loopback addresses (nobody listens for ARP there).

The packets are on the wire before the request answers, as Octavia's are. Closing an AF_PACKET
socket waits for the kernel's synchronize_net() (8-24 ms measured here, per socket), after the
packet is long gone: the ARP sockets are closed on a thread of their own instead of in the
request (it was about a tenth of every reload), and an IPv6 advertisement asks the interface's
MAC with an ioctl on its ICMPv6 socket instead of opening a packet socket for it.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable

from amphora_agent import iproute
from amphora_agent.netns import NETNS_DIR

LOG = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
ALL_NODES = "ff02::1"
NA_ROUTER_OVERRIDE = 0xA0000000  # the R and O flags of a neighbour advertisement
CLONE_NEWNET = 0x40000000
SEND_TIMEOUT_S = 5.0
SIOCGIFHWADDR = 0x8927


def advertise(namespace: str, addresses: Iterable[str]) -> int:
    """Send one advertisement for every address from the interface that carries it in
    namespace ("" = the agent's own). Returns how many went out; never raises."""
    targets = []
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address)
            if parsed.is_loopback:
                continue
            ifname = iproute.interface_with_address(namespace, address)
        except (ValueError, iproute.IPCommandError) as exc:
            LOG.debug("no advertisement for %s: %s", address, exc)
            continue
        if ifname is None:
            LOG.debug("no advertisement for %s: no interface carries it", address)
            continue
        targets.append((ifname, str(parsed), parsed.version))
    if not targets:
        return 0
    sent: list[str] = []

    def send_all() -> None:
        for ifname, address, version in targets:
            try:
                if version == 4:
                    _close_later([send_garp(ifname, address)])
                else:
                    send_neighbour_advertisement(ifname, address)
            except OSError as exc:
                LOG.warning("could not advertise %s on %s: %s", address, ifname, exc)
                continue
            sent.append(address)

    _run_in_namespace(namespace, send_all)
    if sent:
        LOG.info("advertised %s", ", ".join(sent))
    return len(sent)


def send_garp(ifname: str, address: str) -> socket.socket:
    """Send the ARP announcement; the socket it went out on is returned open, for the caller
    to close off the request's path (module doc)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((ifname, ETH_P_ARP))
        mac = sock.getsockname()[4]
        ip = socket.inet_aton(address)
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1,  # Ethernet, IPv4, request
                          mac, ip, BROADCAST_MAC, ip)
        sock.send(BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP) + arp)
    except BaseException:
        _close_later([sock])
        raise
    return sock


def send_neighbour_advertisement(ifname: str, address: str) -> None:
    ifindex = socket.if_nametoindex(ifname)
    target = socket.inet_pton(socket.AF_INET6, address)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        mac = _hardware_address(sock, ifname)
        # type, code, checksum (the kernel's), flags, target, option 2 (target link-layer
        # address) of 1 unit of 8 bytes.
        message = (struct.pack("!BBHI", 136, 0, 0, NA_ROUTER_OVERRIDE) + target
                   + struct.pack("!BB", 2, 1) + mac)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.bind((address, 0, 0, ifindex))
        sock.sendto(message, (ALL_NODES, 0, 0, ifindex))


def _hardware_address(sock: socket.socket, ifname: str) -> bytes:
    """The interface's MAC (SIOCGIFHWADDR: struct ifreq, the address in ifr_hwaddr.sa_data)."""
    request = struct.pack("16s16x", ifname.encode()[:15])
    return fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)[18:24]


def _close_later(sockets: list[socket.socket]) -> None:
    """Close the packet sockets on a thread of their own: the close waits for the kernel's
    synchronize_net(), which the request need not (module doc)."""
    if not sockets:
        return

    def close_all() -> None:
        for sock in sockets:
            sock.close()

    threading.Thread(target=close_all, name="packet-socket-close", daemon=True).start()


def _run_in_namespace(namespace: str, work: Callable[[], None]) -> None:
    """work() in namespace: on a thread of its own that enters it (a network namespace is a
    thread's own; the thread ends with the work, so no other code ever runs in it)."""
    if not namespace:
        work()
        return
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            _enter(namespace)
            work()
        except Exception as exc:  # reported below; the request goes on
            failure.append(exc)

    thread = threading.Thread(target=enter_and_work, name="ip-advertisement", daemon=True)
    thread.start()
    thread.join(SEND_TIMEOUT_S)
    if thread.is_alive():
        LOG.warning("advertisements in %s did not finish within %.0f s", namespace,
                    SEND_TIMEOUT_S)
    elif failure:
        LOG.warning("advertisements in %s failed: %s", namespace, failure[0])


def _enter(namespace: str) -> None:
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)  # Python 3.12+
        if setns is not None:
            setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)
