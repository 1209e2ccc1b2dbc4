"""A netns node's processes: how its init is started, how its processes are found and signalled.

A node is what a container would be, made of plain namespaces: its network namespace (named on
the host: the node's name), and for its init fresh mount, pid, UTS and IPC namespaces. In the
mount namespace the node gets

    /etc, /var/lib   overlays of the host's, whose writes land in the node's state dir: the
                     agent's /etc/octavia and /var/lib/octavia are the node's own
    /run             an empty tmpfs, as at boot: /run/netns is the node's own, so the agent's
                     data-plane namespace keeps the contract's name (amphora-haproxy) in every
                     node, and the host's namespace mounts are not pinned by copies in the node
    /proc, /sys      of the node's pid and network namespaces

tini is the node's pid 1 (it reaps the daemons the agent starts, as in the images), so killing
it kills the node: the kernel ends every process of a pid namespace whose init dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from harness.lab.providers.base import ProviderError
from harness.paths import AGENT_IMPORT_ROOT, IMAGES_DIR
from harness.polling import scaled

# The node's own upper dirs for these host directories (see the module docstring).
OVERLAID = {"/etc": "etc", "/var/lib": "var-lib"}
CONSOLE_LOG = "console.log"
PROCESS_EXIT_TIMEOUT_S = 10.0
INIT_START_TIMEOUT_S = 10.0
POLL_S = 0.02

# Run as the node's first process, inside its new namespaces; then it becomes the node's init.
_SETUP = """set -eu
node_dir=$1 node_hostname=$2
shift 2
hostname "$node_hostname"
mount -t overlay overlay \
    -o "lowerdir=/etc,upperdir=$node_dir/etc,workdir=$node_dir/etc.work" /etc
mount -t overlay overlay \
    -o "lowerdir=/var/lib,upperdir=$node_dir/var-lib,workdir=$node_dir/var-lib.work" /var/lib
umount -l /sys
mount -t sysfs sysfs /sys
awk '$5 ~ "^/run/" {print $5}' /proc/self/mountinfo | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || true
done
mount -t tmpfs -o mode=755 tmpfs /run
exec "$@"
"""

# What each of our "images" runs on this host: the same programs as in the container images,
# on the host's python with the package installed.
IMAGE_ENTRIES = {
    "amphora": ["sh", str(IMAGES_DIR / "amphora" / "amphora-init")],
    "member": [sys.executable, str(Path(__file__).parents[1] / "member_server.py")],
}


def node_environment() -> dict[str, str]:
    """A node's environment: no proxies or test settings of the harness leak in; the python
    that runs the harness (with the agent's console script) comes first on PATH, and it imports
    the agent from the tree the harness runs from, as an image is built from that tree."""
    path = ":".join([str(Path(sys.executable).parent), "/usr/local/sbin", "/usr/local/bin",
                     "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return {"PATH": path, "PYTHONPATH": str(AGENT_IMPORT_ROOT), "HOME": "/root", "LANG": "C.UTF-8"}


def identity_files(hostname: str, address: str) -> dict[str, bytes]:
    """/etc/hostname and /etc/hosts naming the node, as an engine writes them: programs that
    look up their own host name (keepalived does, at every config test) must not wait on a DNS
    server that the node cannot reach."""
    hosts = (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             f"{address}\t{hostname}\n")
    return {"/etc/hostname": f"{hostname}\n".encode(), "/etc/hosts": hosts.encode()}


def prepare_node_dir(node_dir: Path, files: dict[str, bytes], mode: int = 0o600) -> None:
    """The node's upper dirs with files written in (paths under /etc or /var/lib)."""
    for upper in OVERLAID.values():
        (node_dir / upper).mkdir(parents=True, exist_ok=True)
        (node_dir / f"{upper}.work").mkdir(exist_ok=True)
    for path, data in files.items():
        target = next((node_dir / upper / Path(path).relative_to(top)
                       for top, upper in OVERLAID.items() if Path(path).is_relative_to(top)),
                      None)
        if target is None:
            raise ProviderError(f"the netns provider can place files under "
                                f"{' or '.join(OVERLAID)} only, not {path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)


def init_command(namespace_path: Path, node_dir: Path, hostname: str,
                 argv: list[str]) -> list[str]:
    """The host command that starts a node: enter its network namespace, make the others."""
    return ["nsenter", f"--net={namespace_path}", "--",
            "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--mount-proc",
            "--propagation", "private", "--",
            "sh", "-c", _SETUP, "node-setup", str(node_dir), hostname,
            "tini", "--", *argv]


def enter_command(init_pid: int, argv: list[str]) -> list[str]:
    """argv run inside a running node, as `docker exec` would (its namespaces, not its init's
    children: it forks into the pid namespace)."""
    return ["nsenter", "-t", str(init_pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]


def wait_for_init(launcher: psutil.Process) -> psutil.Process:
    """The node's pid 1 (the launcher's forked child), once it exists."""
    deadline = time.monotonic() + scaled(INIT_START_TIMEOUT_S)
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):
            children = launcher.children()
            if children:
                return children[0]
            if launcher.status() == psutil.STATUS_ZOMBIE:
                break
        time.sleep(POLL_S)
    raise ProviderError("the node's init did not start")


def namespace_id(pid: int, kind: str) -> str | None:
    """readlink /proc/PID/ns/KIND ("pid:[4026531836]"), None if unreadable or gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def processes_in(kind: str, namespace: str) -> list[psutil.Process]:
    """Every process on the host in that namespace (kind "pid", "net", ...)."""
    found = []
    for process in psutil.process_iter():
        if namespace_id(process.pid, kind) == namespace:
            found.append(process)
    return found


def node_processes(init: psutil.Process, pid_namespace: str) -> list[psutil.Process]:
    """The init, its descendants (daemons re-parent to it) and whatever entered the namespace
    from outside (an exec). Descendants also catch processes whose /proc/PID/ns is closed to
    us (haproxy's workers, which change user)."""
    found = {p.pid: p for p in processes_in("pid", pid_namespace)}
    with contextlib.suppress(psutil.NoSuchProcess):
        found.setdefault(init.pid, init)
        for child in init.children(recursive=True):
            found.setdefault(child.pid, child)
    return list(found.values())


def send(processes: Iterable[psutil.Process], signum: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def alive(process: psutil.Process) -> bool:
    """Running, stopped or sleeping; a zombie is dead (whoever reaps it may be long gone)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(processes: Iterable[psutil.Process],
              timeout_s: float = PROCESS_EXIT_TIMEOUT_S) -> list[psutil.Process]:
    """Wait until every process has exited; returns those still alive at the deadline."""
    remaining = list(processes)
    deadline = time.monotonic() + scaled(timeout_s)
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if alive(p)]
        if remaining:
            time.sleep(POLL_S)
    return remaining
