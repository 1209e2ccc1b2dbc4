"""haproxy's own word that it is ready: the sd_notify protocol, with the agent as the listener.

Octavia runs haproxy under a systemd unit with Type=notify and `haproxy -Ws`: haproxy's master
sends READY=1 to systemd's notification socket once it is back in its loop, able to take the
next signal; `systemctl start` and `systemctl reload` (which Octavia's agent calls and waits
for) return only then. A reload that returned earlier would let the next SIGUSR2 reach a master
that is still re-executing itself, and haproxy 2.6 re-executes twice per reload: once to load
the new config and fork the new worker, once more into its "wait mode" to free that memory.
Only after the second does it unblock its signals and say READY=1.

Here the agent is that listener: it binds a datagram socket at
{base_path}/haproxy-notify.sock, starts haproxy with -Ws and NOTIFY_SOCKET naming it, and a
thread records every READY=1 by the master pid it names (MAINPID=). The message is accepted only
from that pid itself, as the kernel vouches for it (SO_PASSCRED), and the socket is root's only
(0600). The path is the same after an agent restart, so a haproxy started by the previous agent
process reaches the new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

LOG = logging.getLogger(__name__)

NOTIFY_SOCKET_NAME = "haproxy-notify.sock"
# sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107
_RECV_TIMEOUT_S = 0.5
_MAX_MESSAGE = 4096
_MAX_REMEMBERED_PIDS = 1024
_UCRED = struct.Struct("iII")  # pid, uid, gid


class ReadyNotifier:
    """Receives haproxy's sd_notify messages and tells who said READY=1, and when.

    Every READY=1 gets the next number of one sequence; a caller takes mark() before it starts
    or signals haproxy, then wait_ready(pid, mark, ...) for a READY=1 of that pid after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sequence = 0
        self._ready: OrderedDict[int, int] = OrderedDict()  # master pid -> sequence of its READY
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._socket = self._bind(path)
        self._thread = threading.Thread(target=self._run, name="haproxy-notify", daemon=True)
        self._thread.start()

    @classmethod
    def for_base_path(cls, base_path: Path) -> ReadyNotifier | None:
        """The notifier at {base_path}/haproxy-notify.sock, or None when that path is too long
        for a UNIX socket or cannot be bound (haproxy then runs without -Ws, as before)."""
        path = base_path / NOTIFY_SOCKET_NAME
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            LOG.warning("%s is too long for a UNIX socket: reloads will not wait for haproxy's "
                        "READY=1", path)
            return None
        try:
            return cls(path)
        except OSError as exc:
            LOG.warning("cannot bind %s (%s): reloads will not wait for haproxy's READY=1",
                        path, exc)
            return None

    @staticmethod
    def _bind(path: Path) -> socket.socket:
        path.unlink(missing_ok=True)  # what the previous agent process bound
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old_umask)
            sock.settimeout(_RECV_TIMEOUT_S)
        except OSError:
            sock.close()
            raise
        return sock

    def environment(self) -> dict[str, str]:
        """The environment for a haproxy started with -Ws."""
        return {**os.environ, "NOTIFY_SOCKET": str(self.path)}

    def mark(self) -> int:
        with self._changed:
            return self._sequence

    def wait_ready(self, pid: int, mark: int, timeout: float,
                   still_waiting: Callable[[], object] | None = None) -> bool:
        """Whether pid said READY=1 after mark within timeout. still_waiting() is asked every
        0.1 s and may raise to give up early (the master died)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._ready.get(pid, -1) <= mark:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
                if still_waiting is not None:
                    still_waiting()
        return True

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(_RECV_TIMEOUT_S * 4)
        self._socket.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _run(self) -> None:
        space = socket.CMSG_SPACE(_UCRED.size)
        while not self._stopping.is_set():
            try:
                data, ancillary, _flags, _address = self._socket.recvmsg(_MAX_MESSAGE, space)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                LOG.warning("haproxy notification socket: %s", exc)
                time.sleep(_RECV_TIMEOUT_S)
                continue
            try:
                self._received(data, _sender_pid(ancillary))
            except Exception:  # the thread must outlive whatever one message holds
                LOG.exception("haproxy notification not understood: %r", data[:200])

    def _received(self, data: bytes, sender: int | None) -> None:
        fields = dict(
            line.split("=", 1) for line in data.decode(errors="replace").splitlines()
            if "=" in line
        )
        if fields.get("READY") != "1":
            return
        try:
            pid = int(fields.get("MAINPID", ""))
        except ValueError:
            return
        if sender != pid:
            LOG.warning("READY=1 naming pid %s came from pid %s: ignored", pid, sender)
            return
        with self._changed:
            self._sequence += 1
            self._ready.pop(pid, None)
            self._ready[pid] = self._sequence
            while len(self._ready) > _MAX_REMEMBERED_PIDS:
                self._ready.popitem(last=False)
            self._changed.notify_all()


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
                and len(data) >= _UCRED.size):
            return _UCRED.unpack_from(data)[0]
    return None
