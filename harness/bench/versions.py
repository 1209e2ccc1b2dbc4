"""What a bench run measured: the versions of haproxy, keepalived, the agent and its source, the
images, wrk, the engine and Python, and the host it ran on. Recorded with the results, so that two
results files can be told apart."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

from harness.bench.wrk import Wrk
from harness.lab.lab import LabAmphora
from harness.lab.providers.base import Provider
from harness.paths import CHECKOUT_DIR


def git_revision() -> str | None:
    """The checkout's revision; None when the harness was installed from a wheel (its image
    tags carry the package version instead)."""
    if CHECKOUT_DIR is None:
        return None
    result = subprocess.run(["git", "-C", str(CHECKOUT_DIR), "describe", "--always", "--dirty"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def versions(provider: Provider, amphora: LabAmphora, images: dict[str, str],
             wrk: Wrk) -> dict[str, Any]:
    info = amphora.client.get_info()
    keepalived = provider.exec(amphora.node, ["keepalived", "--version"]).output
    # The Docker provider's engine client; providers without an engine are named instead.
    engine = getattr(provider, "client", None)
    return {
        "haproxy": info.get("haproxy_version"),
        "keepalived": keepalived.splitlines()[0].strip() if keepalived else None,
        "agent": {"api_version": info.get("api_version"), "source": git_revision()},
        "images": dict(images),
        "wrk": wrk.version(),
        "engine": engine.version().get("Version") if engine else provider.name,
        "python": platform.python_version(),
    }


def host(load_before: tuple[float, ...]) -> dict[str, Any]:
    """The machine, and how busy it was before the run and is now."""
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "load_average_before": load_before, "load_average_after": os.getloadavg()}
