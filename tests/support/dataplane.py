"""An amphora's data plane read from outside, with `ip -json -n NAMESPACE`: what the agent's
plugging left in its network namespace, checked without asking the agent."""

from __future__ import annotations

import json
import subprocess


def ip_json(namespace: str, *args: str) -> list[dict]:
    """`ip -n namespace -j args...` parsed (options such as "-6" go first in args)."""
    out = subprocess.run(["ip", "-n", namespace, "-j", *args], check=True, capture_output=True,
                         text=True).stdout.strip()
    return json.loads(out) if out else []


def ipv4_addresses(namespace: str, ifname: str) -> set[str]:
    """The IPv4 addresses on one link, as "address/prefixlen"."""
    return {f"{a['local']}/{a['prefixlen']}"
            for link in ip_json(namespace, "addr", "show", "dev", ifname)
            for a in link["addr_info"] if a["family"] == "inet"}
