"""The figures of GET /1.0/info and /1.0/details, measured on the host the agent runs on.

Units follow Octavia's Amphora API reference: memory and disk in kB; CPU times in clock ticks
since boot (Octavia reads them straight from /proc/stat); network byte counters per interface
of the data-plane namespace (the agent's own namespace when none is configured).
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import psutil

from amphora_agent import API_VERSION
from amphora_agent.config import AgentConfig
from amphora_agent.haproxy import HaproxySupervisor
from amphora_agent.keepalived import KeepalivedSupervisor

_KB = 1024
_TICKS = os.sysconf("SC_CLK_TCK")
_COMMAND_TIMEOUT_S = 5.0


@functools.cache
def package_version(package: str, binary: str) -> str:
    """The installed version of a package, as Debian knows it; else the binary's own report.

    Cached: packages do not change under a running agent.
    """
    for argv, pattern in (
        (["dpkg-query", "-W", "-f=${Version}", package], r"(\S+)"),
        ([binary, "-v"], r"\bv?(\d+\.\d+\S*)"),
    ):
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=_COMMAND_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(pattern, result.stdout + result.stderr)
        if result.returncode == 0 and match:
            return match.group(1)
    return "unknown"


@functools.cache
def dpkg_version(package: str) -> str:
    """What Octavia's agent reports for keepalived and ipvsadm: dpkg's Version field as is.
    That is "" for a package dpkg knows but that is not installed; for one it has never heard of
    (or no dpkg at all) Octavia's agent answers 500, ours "" as well. Cached like
    package_version."""
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


TUNED_ACTIVE_PROFILE = Path("/etc/tuned/active_profile")


def active_tuned_profiles(path: Path = TUNED_ACTIVE_PROFILE) -> str:
    """The active TuneD profile(s) as Octavia reads them: the file's first 1024 characters,
    stripped; "" when TuneD is absent (no file) or the file cannot be read."""
    try:
        with path.open(encoding="utf-8", errors="replace") as profile:
            return profile.read(1024).strip()
    except OSError:
        return ""


def info(config: AgentConfig) -> dict:
    return {
        "hostname": socket.gethostname(),
        "uuid": config.amphora_id,
        "haproxy_version": package_version("haproxy", config.haproxy_cmd),
        "api_version": API_VERSION,
        # Octavia's agent adds these to /info and /details for its LVS (UDP/SCTP) listeners.
        "keepalived_version": dpkg_version("keepalived"),
        "ipvsadm_version": dpkg_version("ipvsadm"),
    }


def _cpu() -> dict[str, int]:
    times = psutil.cpu_times()
    total = sum(times)

    def ticks(seconds: float) -> int:
        return round(seconds * _TICKS)

    return {"total": ticks(total), "user": ticks(times.user), "system": ticks(times.system),
            "soft_irq": ticks(times.softirq)}


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in kB (psutil has no committed_as nor slab on every version)."""
    values = {}
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[key] = int(fields[0])
    return values


def _memory() -> dict[str, int]:
    info_kb = _meminfo()
    names = {"total": "MemTotal", "free": "MemFree", "available": "MemAvailable",
             "buffers": "Buffers", "cached": "Cached", "shared": "Shmem", "slab": "Slab",
             "committed_as": "Committed_AS"}
    memory = {name: info_kb.get(key, 0) for name, key in names.items()}
    memory["swap_used"] = info_kb.get("SwapTotal", 0) - info_kb.get("SwapFree", 0)
    return memory


def _disk() -> dict[str, int]:
    usage = psutil.disk_usage("/")
    return {"used": usage.used // _KB, "available": usage.free // _KB}


def _networks(namespace: str) -> dict[str, dict[str, int]]:
    """tx/rx byte counters of every interface but loopback."""
    if not namespace:
        counters = psutil.net_io_counters(pernic=True)
        return {name: {"network_tx": c.bytes_sent, "network_rx": c.bytes_recv}
                for name, c in sorted(counters.items()) if name != "lo"}
    try:
        result = subprocess.run(["ip", "-n", namespace, "-s", "-j", "link", "show"],
                                capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S,
                                check=True)
        links = json.loads(result.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {
        link["ifname"]: {"network_tx": link["stats64"]["tx"]["bytes"],
                         "network_rx": link["stats64"]["rx"]["bytes"]}
        for link in links
        if link.get("ifname") != "lo" and "stats64" in link
    }


def details(config: AgentConfig, haproxy: HaproxySupervisor,
            keepalived: KeepalivedSupervisor) -> dict:
    lb_ids = haproxy.lb_ids()
    listeners = sorted(
        listener_id for lb_id in lb_ids for listener_id in haproxy.parsed_config(lb_id).listeners
    )
    return {
        **info(config),
        "networks": _networks(config.network_namespace),
        "haproxy_count": sum(1 for lb_id in lb_ids if haproxy.is_running(lb_id)),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu(),
        "memory": _memory(),
        "disk": _disk(),
        "load": [f"{value:.2f}" for value in os.getloadavg()],
        # Octavia's driver pins haproxy threads to CPUs only under its "amphora" TuneD
        # profile.
        "active_tuned_profiles": active_tuned_profiles(),
        # No LVS listeners here (UDP/SCTP are not implemented): none runs.
        "lvs_listener_process_count": 0,
        **keepalived.topology(config.loadbalancer_topology),
        "listeners": listeners,
        "packages": {
            "haproxy": package_version("haproxy", config.haproxy_cmd),
            "keepalived": package_version("keepalived", config.keepalived_cmd),
        },
    }
