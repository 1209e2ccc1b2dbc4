"""Where a lab's host-side commands run: `nft` for link faults (harness.faults.link,
harness.lab.host_tables), `ip link` for a cut link. The lab's bridges are in the network
namespace of its engine's host: this host's (or a namespace here, in tests) for a local engine,
a namespace this host cannot enter for an engine elsewhere, where the engine runs the commands
for us (harness.lab.providers.fault_node). The commands are the same either way; only the shell
that runs them differs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol


class HostShell(Protocol):
    """Runs argv in the network namespace of a lab's bridges and waits for it."""

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class LocalShell:
    """argv on this host, or inside `namespace` (ip netns exec) when the bridges live in one."""

    namespace: str | None = None

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        return subprocess.run([*prefix, *argv], text=True, capture_output=True, check=False)


THIS_HOST = LocalShell()
