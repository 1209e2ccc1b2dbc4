"""Which connections the API server keeps, so that clients without a certificate cannot lock
out the controller.

A connection is *pending* from accept until its TLS handshake has verified a client certificate
that chains to the CA, then *authenticated* until it closes. The two are bounded separately, and
pending ones can never take an authenticated one's place:

- At most MAX_PENDING connections are pending, each for at most the handshake deadline (the
  server's; the whole handshake, not each read). When a connection arrives and every pending
  slot is taken, a pending one is cut to make room: the oldest of the source that holds the most
  pending slots (sources are IPv4 addresses and IPv6 /64 networks). Holding slots therefore only
  ever costs a source its own connections first: a client at another address is cut only once
  that address holds as many slots as the busiest, and a client at the attacker's own address
  only when MAX_PENDING newer connections arrived during its handshake, which takes
  milliseconds.
- At most MAX_AUTHENTICATED connections are authenticated; a connection that authenticates
  beyond that is turned away (the server answers 503, which the driver retries).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections import deque
from dataclasses import dataclass

MAX_PENDING = 128
MAX_AUTHENTICATED = 64
IPV6_SOURCE_PREFIX = 64


def source_of(address: str) -> str:
    """The source a client address counts against: itself for IPv4, its /64 for IPv6 (one
    host gets a whole /64, and could otherwise pose as millions of sources)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(ip)


@dataclass(eq=False)
class Ticket:
    """One accepted connection's place."""

    fd: int
    family: int
    source: str
    evicted: bool = False


class ConnectionAdmission:
    def __init__(self, max_pending: int = MAX_PENDING,
                 max_authenticated: int = MAX_AUTHENTICATED) -> None:
        self._max_pending = max_pending
        self._max_authenticated = max_authenticated
        self._lock = threading.Lock()
        # Pending tickets by source, oldest first.
        self._pending: dict[str, deque[Ticket]] = {}
        self._pending_count = 0
        self._authenticated: set[Ticket] = set()

    def admit(self, sock: socket.socket, address: str) -> tuple[Ticket, Ticket | None]:
        """A pending place for a just accepted connection, and the pending ticket evicted to
        make room (its socket is shut down, which ends its handshake at once), if any."""
        ticket = Ticket(sock.fileno(), sock.family, source_of(address))
        with self._lock:
            evicted = self._evict_one() if self._pending_count >= self._max_pending else None
            self._pending.setdefault(ticket.source, deque()).append(ticket)
            self._pending_count += 1
        return ticket, evicted

    def authenticate(self, ticket: Ticket) -> bool:
        """Move a ticket whose handshake succeeded to the authenticated connections; False when
        it was evicted meanwhile or no authenticated place is free (the caller closes it)."""
        with self._lock:
            if not self._drop_pending(ticket):
                return False
            if len(self._authenticated) >= self._max_authenticated:
                return False
            self._authenticated.add(ticket)
            return True

    def release(self, ticket: Ticket) -> None:
        """The connection is over; to be called before its socket is closed (so that an
        eviction never shuts down a file descriptor already reused by another connection)."""
        with self._lock:
            self._drop_pending(ticket)
            self._authenticated.discard(ticket)

    def _evict_one(self) -> Ticket:
        source = max(self._pending, key=lambda name: len(self._pending[name]))
        victim = self._pending[source][0]
        self._drop_pending(victim)
        victim.evicted = True
        # The victim's thread is blocked in its handshake on this descriptor, through a socket
        # object of its own: shut the connection down through a duplicate of the descriptor.
        with contextlib.suppress(OSError), socket.fromfd(victim.fd, victim.family,
                                                         socket.SOCK_STREAM) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
        return victim

    def _drop_pending(self, ticket: Ticket) -> bool:
        queue = self._pending.get(ticket.source)
        if queue is None or ticket not in queue:
            return False
        queue.remove(ticket)
        if not queue:
            del self._pending[ticket.source]
        self._pending_count -= 1
        return True
