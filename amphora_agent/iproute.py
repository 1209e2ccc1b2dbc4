"""iproute2's `ip` command, run in a network namespace (or the default one)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

IP_TIMEOUT_S = 30.0


class IPCommandError(RuntimeError):
    """`ip` failed; the message carries the command line and what ip printed."""


def ip(namespace: str, *args: str) -> str:
    """Run `ip [-n namespace] args...` and return its output; empty namespace = default one."""
    argv = ["ip", *(("-n", namespace) if namespace else ()), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IPCommandError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise IPCommandError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def ip_json(namespace: str, *args: str) -> list[dict[str, Any]]:
    """Run `ip -j ...` and return the parsed list (ip prints nothing for an empty result)."""
    out = ip(namespace, "-j", *args).strip()
    return json.loads(out) if out else []


def links(namespace: str) -> list[dict[str, Any]]:
    return ip_json(namespace, "link", "show")


def link_name_by_mac(namespace: str, mac: str) -> str | None:
    """The name of the interface with this MAC in namespace, or None."""
    wanted = mac.lower()
    for link in links(namespace):
        if link.get("address", "").lower() == wanted and link.get("link_type") == "ether":
            return link["ifname"]
    return None


def interface_with_address(namespace: str, address: str) -> str | None:
    """The interface that carries address in namespace (compared as IPs), or None."""
    wanted = ipaddress.ip_address(address)
    for link in ip_json(namespace, "addr", "show"):
        for info in link.get("addr_info", ()):
            if ipaddress.ip_address(info["local"]) == wanted:
                return link["ifname"]
    return None
