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


def ensure_namespace(namespace: str) -> None:
    """Create the namespace with its loopback up, unless it exists (the agent may restart)."""
    if not namespace or namespace_exists(namespace):
        return
    subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
    subprocess.run(
        in_namespace(namespace, ["ip", "link", "set", "lo", "up"]),
        check=True,
        capture_output=True,
    )
