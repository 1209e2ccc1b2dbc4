"""haproxy statistics as the harness reads them, to check what amphorae report.

Two ways in:
- a load balancer's stats socket (`stats socket` in global, at AmphoraPaths.stats_socket): inside
  an amphora through the provider's exec with socat (the socket file is in the amphora's file
  system, reachable from its default namespace although haproxy runs in the data-plane one), or
  a socket on this host (tests run haproxy on loopback);
- haproxy's stats page (`stats enable`), where a config has one, with the haproxy-stats package.
  That package fetches `<host:port>/;csv;norefresh`, so the page must be served at `stats uri /`;
  it reports failures through a `failed` flag, which is turned into StatsError here.

Both give the rows of haproxy's CSV statistics (pxname, svname, status, scur, stot, bin, bout,
ereq, weight, ...). The parsing is deliberately the harness's own, not the agent's: the harness
exists to check the agent, so it must not share the agent's mistakes.

What the byte counters should say is computed from the exact bytes a client exchanged
(http_exchange). haproxy 2.6 counts an HTTP message's body exactly, but its head in haproxy's
internal (HTX) form: without the syntax (spaces, ": ", CRLFs), without connection-management
headers, with a fixed-size structure for the start line, and not always with headers haproxy
added itself. So each message counts its body plus somewhere between nothing and twice its
head: |counted - wire bytes| <= head bytes. Requests haproxy rejects as malformed, and the
error it answers them with, count in no byte counter (only in ereq and the connection counts).
"""

from __future__ import annotations

import csv
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.lab import reach
from harness.lab.lab import LabAmphora
from harness.lab.providers.base import Provider
from harness.render.amphora_configs import AmphoraPaths

SOCKET_TIMEOUT_S = 5.0
# Frontend counters in the heartbeat's words: message field -> haproxy CSV column.
HEARTBEAT_FIELDS = {"rx": "bin", "tx": "bout", "conns": "scur", "totconns": "stot",
                    "ereq": "ereq"}


HEAD_END = b"\r\n\r\n"


class StatsError(RuntimeError):
    """Statistics could not be read, or lack what was asked for."""


@dataclass(frozen=True)
class StatsTable:
    """One reading of haproxy's statistics: the CSV rows, every value as text."""

    rows: tuple[dict[str, str], ...]

    def row(self, pxname: str, svname: str) -> dict[str, str]:
        for row in self.rows:
            if row.get("pxname") == pxname and row.get("svname") == svname:
                return row
        raise StatsError(f"no statistics row {pxname}/{svname}")

    def frontend(self, listener_id: str) -> dict[str, int]:
        """A listener's counters under the heartbeat's names (rx, tx, conns, totconns, ereq);
        absolute values of the worker that answered."""
        row = self.row(listener_id, "FRONTEND")
        return {name: int(row.get(column) or 0) for name, column in HEARTBEAT_FIELDS.items()}

    def server_statuses(self, pool_id: str, listener_id: str) -> dict[str, str]:
        """haproxy's status of every server (member id) of a pool, as haproxy prints it."""
        backend = f"{pool_id}:{listener_id}"
        return {row["svname"]: row.get("status", "") for row in self.rows
                if row.get("pxname") == backend and row.get("svname") not in
                ("FRONTEND", "BACKEND")}


def parse_csv(text: str) -> StatsTable:
    """`show stat` output (or a stats page's CSV): a header line starting with "# pxname"."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# pxname"):
        raise StatsError(f"not haproxy CSV statistics: {text[:120]!r}")
    lines[0] = lines[0][2:]
    return StatsTable(tuple(csv.DictReader(lines)))


class StatsSocket(Protocol):
    """Something that sends one command to a haproxy stats socket and returns the answer."""

    def command(self, text: str) -> str: ...


def show_stat(stats_socket: StatsSocket) -> StatsTable:
    return parse_csv(stats_socket.command("show stat"))


class UnixStatsSocket:
    """A stats socket on this host."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def command(self, text: str) -> str:
        chunks = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(SOCKET_TIMEOUT_S)
                sock.connect(str(self.path))
                sock.sendall(text.encode() + b"\n")
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise StatsError(f"stats socket {self.path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")


class AmphoraStatsSocket:
    """A load balancer's stats socket inside an amphora, spoken to with socat via exec."""

    # The command and the path travel as arguments, never inside the shell text.
    _SCRIPT = 'printf "%s\\n" "$1" | socat -t 5 - "UNIX-CONNECT:$2"'

    def __init__(self, provider: Provider, amphora: LabAmphora, lb_id: str,
                 paths: AmphoraPaths | None = None) -> None:
        self.provider = provider
        self.amphora = amphora
        self.path = (paths or AmphoraPaths()).stats_socket(lb_id)

    def command(self, text: str) -> str:
        result = self.provider.exec(self.amphora.node,
                                    ["sh", "-c", self._SCRIPT, "sh", text, self.path])
        if not result.ok:
            raise StatsError(f"{self.amphora.name}: socat to {self.path} failed "
                             f"({result.exit_code}): {result.output.strip()}")
        return result.output


def read_stats_page(address: str, port: int, timeout: float = 5.0) -> StatsTable:
    """The statistics behind a stats page served at `stats uri /` on address:port."""
    # Imported here, not at the top: the package configures the root logger when imported,
    # which only the code paths that use it should pay for.
    from haproxystats import HAProxyServer

    server = HAProxyServer(f"{address}:{port}", timeout=timeout)
    if server.failed:
        raise StatsError(f"no statistics from the stats page at {address}:{port}")
    return StatsTable(tuple(_page_row(server.fields, service) for service in
                            _services(server)))


def _services(server) -> Iterable:
    return [*server.frontends, *server.backends, *server.listeners]


def _page_row(fields: list[str], service) -> dict[str, str]:
    # The package turns numeric text into ints; back to text, as in the socket's rows.
    values = vars(service)
    return {name: str(values[name]) for name in fields if name in values}


# --- what a client put on the wire ----------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """The exact bytes of one HTTP exchange on its own connection."""

    request: bytes
    response: bytes

    @property
    def status(self) -> int:
        """The response's status code (0 when the server answered nothing)."""
        parts = self.response.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def http_request(path: str, host: str, body: bytes = b"") -> bytes:
    """A well-formed HTTP/1.1 request for its own connection: GET, or POST when it has a body."""
    method = "POST" if body else "GET"
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{length}Connection: close\r\n\r\n"
            .encode() + body)


def http_exchange(address: str, port: int, request: bytes, timeout: float = 10.0) -> Exchange:
    """Send request on a new connection and read until the server closes it (requests should
    say `Connection: close`)."""
    chunks = []
    with reach.connect(address, port, timeout=timeout) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return Exchange(request, b"".join(chunks))


def head_size(message: bytes) -> int:
    """Bytes of an HTTP/1 message's head: start line, header lines and the empty line."""
    head, separator, _ = message.partition(HEAD_END)
    if not separator:
        raise ValueError(f"not an HTTP/1 message: {message[:60]!r}")
    return len(head) + len(separator)


def counted_bytes_range(messages: Iterable[bytes]) -> tuple[int, int]:
    """(lowest, highest) value a haproxy byte counter may show for these well-formed messages:
    their bodies exactly, their heads anywhere from not at all to twice (see the module doc)."""
    messages = list(messages)
    wire = sum(len(message) for message in messages)
    heads = sum(head_size(message) for message in messages)
    return wire - heads, wire + heads
