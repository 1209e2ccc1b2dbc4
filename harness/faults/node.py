"""Faults done to one node: engine operations on the whole node (a crashed, stopped or hung VM,
a cut link), tc netem inside its data-plane namespace, and killed processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.faults.base import Fault, FaultError, FaultUnsupported
from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.providers.base import ExecResult, Node, Provider

# Matches every process of the agent, ours (`python3 -m amphora_agent --config-file ...`) and
# Octavia's: its forked children keep the command line (`.../amphora-agent --config-file ...`),
# but its gunicorn master and worker retitle themselves `gunicorn: master [gunicorn]` and
# `gunicorn: worker [gunicorn]` (gunicorn's setproctitle); left alive, the master keeps
# serving and systemd restarts nothing, while the health sender it forked stays dead. Not
# `amphora_agent.vrrp_check`, the check keepalived runs: killing that would fail a VRRP check,
# which is a different fault.
AGENT_PATTERN = "amphora[-_]agent( |$)|^gunicorn: (master|worker) \\["


@dataclass
class EngineFault(Fault):
    """An engine operation on a whole node, undone by its inverse."""

    description: str
    do: Callable[[], None]
    undo: Callable[[], None]

    def apply(self) -> None:
        self.do()

    def heal(self) -> None:
        self.undo()


class NetemDelay(Fault):
    """tc netem delay on one interface inside the node's data-plane namespace."""

    def __init__(self, provider: Provider, node: Node, interface: str, delay_ms: int,
                 jitter_ms: int = 0) -> None:
        self.description = f"{delay_ms}ms delay on {node.name} {interface}"
        self._provider, self._node, self._interface = provider, node, interface
        self._netem = ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])

    def _tc(self, *args: str) -> ExecResult:
        return self._provider.exec(
            self._node, ["ip", "netns", "exec", DATA_PLANE_NAMESPACE, "tc", "qdisc", *args])

    def apply(self) -> None:
        result = self._tc("add", "dev", self._interface, "root", "netem", *self._netem)
        if not result.ok:
            # tc says "Specified qdisc kind is unknown." when the kernel lacks sch_netem.
            if "unknown" in result.output.lower():
                raise FaultUnsupported(
                    f"this kernel has no sch_netem, so no delay can be added: "
                    f"{result.output.strip()}")
            raise FaultError(f"tc netem on {self._node.name}: {result.output.strip()}")

    def heal(self) -> None:
        result = self._tc("del", "dev", self._interface, "root")
        if not result.ok and "no qdisc" not in result.output.lower():
            raise FaultError(f"removing netem on {self._node.name}: {result.output.strip()}")


class ProcessKill(Fault):
    """SIGKILL a process inside a node; the heal brings the service back (through the API, as a
    controller would, or by waiting for the node's init to restart it)."""

    def __init__(self, description: str, kill: Callable[[], ExecResult],
                 restore: Callable[[], None]) -> None:
        self.description = description
        self._kill, self._restore = kill, restore

    def apply(self) -> None:
        result = self._kill()
        if not result.ok:
            raise FaultError(f"{self.description}: no such process")

    def heal(self) -> None:
        self._restore()
