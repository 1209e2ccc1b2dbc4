"""Reading one haproxy's statistics: `show info` and `show stat` in one round trip.

Both commands go in a single request (haproxy runs `;`-separated commands in order on one
connection), so the process id and the counters always come from the same haproxy worker, even
while a reload replaces it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from amphora_agent.haproxy import socket_command

# Fields whose value grows for the life of a worker; the heartbeat reports their deltas.
COUNTER_FIELDS = ("bin", "bout", "ereq", "stot")


class StatsError(OSError):
    """The stats socket did not answer with what `show info;show stat` prints."""


@dataclass(frozen=True)
class HaproxyStats:
    pid: int  # the worker that answered: a new pid means counters restarted from zero
    rows: list[dict[str, str]]  # show stat's CSV rows (pxname, svname, status, scur, ...)

    def frontends(self) -> dict[str, dict[str, str]]:
        return {row["pxname"]: row for row in self.rows if row.get("svname") == "FRONTEND"}


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
    except (KeyError, ValueError) as exc:
        raise StatsError("no Pid in the `show info` answer") from exc
    lines = [line for line in ("pxname" + stat_text).splitlines() if line.strip()]
    return HaproxyStats(pid=pid, rows=list(csv.DictReader(lines)))


def read_stats(stats_socket: Path) -> HaproxyStats:
    return parse_stats(socket_command(stats_socket, "show info;show stat"))


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
