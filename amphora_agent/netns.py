"""The data-plane network namespace: haproxy, keepalived and the VIP interface live in it."""

from __future__ import annotations

import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def in_namespace(namespace: str, argv: list[str]) -> list[str]:
    """argv, run inside namespace (or as is when namespace is empty: single-host test mode)."""
    if not namespace:
        return list(argv)
    return ["ip", "netns", "exec", namespace, *argv]


def namespace_exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


# haproxy binds listeners to the VIP before keepalived holds it (the backup of an active/standby
# pair never holds it until failover), so the namespace must allow binding absent addresses.
# PING health monitors run ping from haproxy's workers, which haproxy starts with no_new_privs:
# ping's file capability does not apply there, so it needs unprivileged ICMP sockets.
NAMESPACE_SYSCTLS = (
    "net.ipv4.ip_nonlocal_bind=1",
    "net.ipv6.ip_nonlocal_bind=1",
    "net.ipv4.ping_group_range=0 2147483647",
)


def ensure_namespace(namespace: str) -> None:
    """Create the namespace with loopback up and non-local binds allowed (idempotent: the agent
    may restart and find it)."""
    if not namespace:
        return
    if not namespace_exists(namespace):
        subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
    subprocess.run(
        in_namespace(namespace, ["ip", "link", "set", "lo", "up"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        in_namespace(namespace, ["sysctl", "-q", "-w", *NAMESPACE_SYSCTLS]),
        check=True,
        capture_output=True,
    )
