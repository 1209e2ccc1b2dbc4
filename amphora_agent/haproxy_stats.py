"""Reading one haproxy worker's statistics: `show info` and `show stat` in one round trip.

Both commands go in a single request (haproxy runs `;`-separated commands in order on one
connection), so the process id and the counters always come from the same haproxy worker, even
while a reload replaces it.

A StatsSession is a stats socket session held open in interactive (`prompt`) mode. haproxy
counts it as work in progress: a worker that was told to stop (the old one after a reload)
closes its listeners but does not exit while the session is open. Holding one on the worker a
reload replaces lets the heartbeat read that worker once more after it stopped accepting
connections, when its counters can no longer change (`drained`), and only then let it go.
"""

from __future__ import annotations

import csv
import socket
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.haproxy import SOCKET_TIMEOUT_S, socket_command

# Fields whose value grows for the life of a worker; the heartbeat reports their deltas.
COUNTER_FIELDS = ("bin", "bout", "ereq", "stot")


class StatsError(OSError):
    """The stats socket did not answer with what `show info;show stat` prints."""


STATS_COMMAND = "show info;show stat"
# What haproxy prints after each answer in interactive mode.
PROMPT = b"\n> "


@dataclass(frozen=True)
class HaproxyStats:
    pid: int  # the worker that answered
    # When that worker started (show info's Start_time_sec): with the pid, it tells one
    # worker from another even if a pid is ever reused.
    started: int
    stopping: bool  # the worker was told to stop: it no longer takes new connections
    rows: list[dict[str, str]]  # show stat's CSV rows (pxname, svname, status, scur, ...)

    def frontends(self) -> dict[str, dict[str, str]]:
        return {row["pxname"]: row for row in self.rows if row.get("svname") == "FRONTEND"}

    @property
    def drained(self) -> bool:
        """A stopping worker whose frontends are all stopped (no listener left to accept on)
        and hold no connection (nothing left to send or receive): none of its counters can
        change any more."""
        return self.stopping and all(
            row.get("status") == "STOP" and row.get("scur") == "0"
            for row in self.frontends().values()
        )


def parse_stats(answer: str) -> HaproxyStats:
    info_text, sep, stat_text = answer.partition("# pxname")
    if not sep:
        raise StatsError("no `show stat` table in the answer")
    info = {}
    for line in info_text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            info[key.strip()] = value.strip()
    try:
        pid = int(info["Pid"])
        started = int(info.get("Start_time_sec", "0"))
    except (KeyError, ValueError) as exc:
        raise StatsError("no Pid in the `show info` answer") from exc
    lines = [line for line in ("pxname" + stat_text).splitlines() if line.strip()]
    return HaproxyStats(pid=pid, started=started, stopping=info.get("Stopping") == "1",
                        rows=list(csv.DictReader(lines)))


def read_stats(stats_socket: Path) -> HaproxyStats:
    """One reading from whichever worker answers on the stats socket (the current one)."""
    return parse_stats(socket_command(stats_socket, STATS_COMMAND))


class StatsSession:
    """An interactive session on the worker that accepts it, held open until close()."""

    def __init__(self, stats_socket: Path, timeout: float = SOCKET_TIMEOUT_S) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(stats_socket))
            self._command("prompt")
        except OSError:
            self._sock.close()
            raise

    def read(self) -> HaproxyStats:
        """A reading of the session's worker; StatsError once that worker has gone."""
        # One command at a time: in interactive mode haproxy prompts after each.
        return parse_stats("".join(self._command(command)
                                   for command in STATS_COMMAND.split(";")))

    def close(self) -> None:
        self._sock.close()

    def _command(self, command: str) -> str:
        self._sock.sendall(command.encode() + b"\n")
        answer = bytearray()
        while not answer.endswith(PROMPT):
            chunk = self._sock.recv(65536)
            if not chunk:
                raise StatsError("the worker closed the session")
            answer += chunk
        return answer[:-len(PROMPT)].decode(errors="replace")


def member_status(row: dict[str, str]) -> str:
    """A server row's status in the heartbeat's words: UP, DOWN, DRAIN, MAINT or "no check".

    haproxy also prints transitions ("UP 1/3" is still up, "DOWN 1/2" still down), why a server
    is in maintenance ("MAINT (via ...)"), and NOLB for a server taking no new traffic.
    A server that is up with weight 0 is being drained (haproxy says UP).
    """
    status = row.get("status", "")
    word = status.split(" ", 1)[0]
    if word == "UP" and row.get("weight") == "0":
        return "DRAIN"
    if word == "NOLB":
        return "DRAIN"
    if word in ("UP", "DOWN", "MAINT", "DRAIN"):
        return word
    return status
