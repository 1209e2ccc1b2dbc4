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
- At most MAX_AUTHENTICATED connections are authenticated, busy with a request or *idle*
  between two (HTTP keep-alive). At most MAX_IDLE are idle: one more going idle closes the
  oldest idle one. A connection that authenticates when every place is taken closes the oldest
  idle one to take its place, or, with none idle, is turned away (the server answers 503, which
  the driver retries). Closing an idle connection costs its client one new handshake.
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
MAX_IDLE = 16
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
                 max_authenticated: int = MAX_AUTHENTICATED, max_idle: int = MAX_IDLE) -> None:
        self._max_pending = max_pending
        self._max_authenticated = max_authenticated
        self._max_idle = max_idle
        self._lock = threading.Lock()
        # Pending tickets by source, oldest first.
        self._pending: dict[str, deque[Ticket]] = {}
        self._pending_count = 0
        self._authenticated: set[Ticket] = set()
        self._idle: deque[Ticket] = deque()  # oldest first

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
        """Move a ticket whose handshake succeeded to the authenticated connections (closing the
        oldest idle one if that is the only way to make room); False when it was evicted
        meanwhile or no place can be made (the caller turns it away)."""
        with self._lock:
            if not self._drop_pending(ticket):
                return False
            if len(self._authenticated) >= self._max_authenticated:
                if not self._idle:
                    return False
                self._cut_idle(self._idle[0])
            self._authenticated.add(ticket)
            return True

    def idle(self, ticket: Ticket) -> None:
        """The connection waits for its next request (closing the oldest idle one when too many
        wait)."""
        with self._lock:
            if ticket.evicted:
                return
            self._idle.append(ticket)
            if len(self._idle) > self._max_idle:
                self._cut_idle(self._idle[0])

    def busy(self, ticket: Ticket) -> bool:
        """The connection's next request arrived; False when the connection was cut meanwhile
        (the request must then not be served)."""
        with self._lock:
            if ticket.evicted:
                return False
            self._idle.remove(ticket)
            return True

    def release(self, ticket: Ticket) -> None:
        """The connection is over; to be called before its socket is closed (so that an
        eviction never shuts down a file descriptor already reused by another connection)."""
        with self._lock:
            self._drop_pending(ticket)
            self._authenticated.discard(ticket)
            if ticket in self._idle:
                self._idle.remove(ticket)

    def _cut_idle(self, ticket: Ticket) -> None:
        self._idle.remove(ticket)
        self._authenticated.discard(ticket)
        _cut(ticket)

    def _evict_one(self) -> Ticket:
        source = max(self._pending, key=lambda name: len(self._pending[name]))
        victim = self._pending[source][0]
        self._drop_pending(victim)
        _cut(victim)
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


def _cut(ticket: Ticket) -> None:
    """Shut the ticket's connection down. Its thread is blocked on this descriptor (in the
    handshake, or waiting for a request) through a socket object of its own: the shutdown goes
    through a duplicate of the descriptor, and the thread sees the connection end."""
    ticket.evicted = True
    with contextlib.suppress(OSError), socket.fromfd(ticket.fd, ticket.family,
                                                     socket.SOCK_STREAM) as duplicate:
        duplicate.shutdown(socket.SHUT_RDWR)
