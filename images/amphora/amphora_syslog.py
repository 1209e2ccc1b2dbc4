"""The amphora's syslog receiver: where Octavia's amphora runs rsyslog on haproxy's log socket,
ours appends what arrives there to a file (started by amphora-init).

haproxy sends one datagram per request and never waits for the receiver: when the socket's
queue is full it drops the line. A receiver woken for every datagram (socat did that: a wake-up,
a read and a file write per request) took a fifth of a core under load on a two-core machine,
CPU the load balancer's own data plane then lacked. This one wakes on the first datagram, lets
a batch gather for BATCH_GATHER_S, drains the queue and writes the batch with one write, so it
costs a few percent of a core at thousands of requests per second and loses nothing while the
queue holds a batch (--queue-length raises the kernel's per-socket limit, 10 datagrams by
default, in the network namespace the socket is made in).

usage: amphora_syslog.py SOCKET LOGFILE [--queue-length N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

# How long a batch gathers after its first datagram; at 10,000 lines a second that is 50 lines,
# well within a raised queue and a datagram sender's default socket buffer.
BATCH_GATHER_S = 0.005
# The largest syslog datagram read (haproxy's default log line limit is 1024 bytes).
DATAGRAM_MAX = 65536
MAX_DGRAM_QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def raise_queue_length(length: int) -> bool:
    """Let LENGTH datagrams wait on unix datagram sockets made from now on in this network
    namespace; False where /proc/sys is read-only (then batches only gather what is queued)."""
    try:
        if int(MAX_DGRAM_QLEN.read_text()) < length:
            MAX_DGRAM_QLEN.write_text(str(length))
    except OSError:
        return False
    return True


def bind(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    path.chmod(0o666)  # haproxy's workers log as an unprivileged user
    return receiver


def drain(receiver: socket.socket, first: bytes) -> bytes:
    """FIRST and every datagram already queued behind it, one line each."""
    lines = [first]
    while True:
        try:
            lines.append(receiver.recv(DATAGRAM_MAX, socket.MSG_DONTWAIT))
        except BlockingIOError:
            break
    return b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)


def serve(receiver: socket.socket, log: int, gather_s: float) -> None:
    while True:
        first = receiver.recv(DATAGRAM_MAX)
        if gather_s:
            time.sleep(gather_s)
        os.write(log, drain(receiver, first))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", type=Path)
    parser.add_argument("logfile", type=Path)
    parser.add_argument("--queue-length", type=int, default=0,
                        help="raise the namespace's unix datagram queue limit to this first")
    args = parser.parse_args(argv)
    gathering = bool(args.queue_length) and raise_queue_length(args.queue_length)
    receiver = bind(args.socket)
    args.logfile.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(args.logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    # SIGTERM (amphora-init's shutdown) ends the loop; the socket file goes with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(receiver, log, BATCH_GATHER_S if gathering else 0.0)
    finally:
        with contextlib.suppress(FileNotFoundError):
            args.socket.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
