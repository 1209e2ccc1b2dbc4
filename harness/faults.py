"""Fault injection: every fault acts from outside the amphora (engine operations, the host's
bridges, tc in the data-plane namespace) or kills processes inside it — never through the agent.

Every fault has a heal. A FaultInjector remembers what it applied, so a test that fails while a
fault is active still leaves the lab healed (the plugin heals at teardown).

Link-level faults between amphorae (partition, loss) are nftables rules of the `bridge` family on
the host, matched on the MAC addresses of the amphorae's ports: they need nothing inside the
amphora, so they work against any agent image. Each lives in its own table whose name carries
the lab id, so `remove_lab_tables` (teardown, gc) finds what a crashed run left behind.
"""

from __future__ import annotations

import abc
import itertools
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from harness.lab import Amphora, Lab
from harness.providers.base import Port

LOG = logging.getLogger(__name__)

DATA_PLANE_NAMESPACE = "amphora-haproxy"
NFT_TABLE_PREFIX = "amphora_harness_"
# The agent runs as `python3 -m amphora_agent`; its process name is python3, so match the command.
AGENT_PATTERN = "amphora_agent"
_table_numbers = itertools.count(1)


class FaultError(RuntimeError):
    """A fault could not be applied or healed; the message says why."""


class FaultUnsupported(FaultError):
    """This host cannot produce the fault (e.g. its kernel lacks sch_netem)."""


class Fault(abc.ABC):
    """Something wrong done to a lab, and its undoing."""

    description: str

    @abc.abstractmethod
    def apply(self) -> None: ...

    @abc.abstractmethod
    def heal(self) -> None: ...

    def __str__(self) -> str:
        return self.description


def _nft(script: str) -> None:
    result = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if result.returncode != 0:
        raise FaultError(f"nft: {result.stderr.strip()}")


def remove_lab_tables(lab_id: str | None = None) -> list[str]:
    """Delete the host's nft tables of one lab's faults (every lab's with lab_id=None)."""
    listed = subprocess.run(["nft", "list", "tables", "bridge"], text=True, capture_output=True)
    prefix = NFT_TABLE_PREFIX + (f"{lab_id}_" if lab_id else "")
    removed = []
    for line in listed.stdout.splitlines():
        name = line.split()[-1] if line.startswith("table bridge ") else ""
        if name.startswith(prefix):
            subprocess.run(["nft", "delete", "table", "bridge", name], capture_output=True)
            removed.append(name)
    return removed


class BridgeRules(Fault):
    """Frame-dropping rules on the host's bridges, in a table of their own."""

    def __init__(self, lab: Lab, description: str, rules: list[str]) -> None:
        self.description = description
        self.table = f"{NFT_TABLE_PREFIX}{lab.id}_{next(_table_numbers)}"
        self.rules = rules

    def apply(self) -> None:
        body = "\n".join(f"    {rule}" for rule in self.rules)
        _nft(
            f"table bridge {self.table} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority -10; policy accept;\n"
            f"{body}\n"
            "  }\n"
            "}\n"
        )

    def heal(self) -> None:
        subprocess.run(["nft", "delete", "table", "bridge", self.table], capture_output=True)


@dataclass
class EngineFault(Fault):
    """An engine operation on a whole amphora, undone by its inverse."""

    description: str
    do: Callable[[], None]
    undo: Callable[[], None]

    def apply(self) -> None:
        self.do()

    def heal(self) -> None:
        self.undo()


class NetemDelay(Fault):
    """tc netem delay on the amphora's VIP interface inside its data-plane namespace."""

    def __init__(self, lab: Lab, amphora: Amphora, interface: str, delay_ms: int,
                 jitter_ms: int = 0) -> None:
        self.description = f"{delay_ms}ms delay on {amphora.name} {interface}"
        self._lab, self._amphora, self._interface = lab, amphora, interface
        self._netem = ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])

    def _tc(self, *args: str):
        return self._lab.provider.exec(
            self._amphora.node,
            ["ip", "netns", "exec", DATA_PLANE_NAMESPACE, "tc", "qdisc", *args],
        )

    def apply(self) -> None:
        result = self._tc("add", "dev", self._interface, "root", "netem", *self._netem)
        if not result.ok:
            if "unknown" in result.output.lower():
                raise FaultUnsupported(
                    f"this kernel has no sch_netem, so no delay can be added: {result.output}"
                )
            raise FaultError(f"tc netem on {self._amphora.name}: {result.output.strip()}")

    def heal(self) -> None:
        self._tc("del", "dev", self._interface, "root")


class ProcessKill(Fault):
    """SIGKILL a process inside an amphora; the heal brings the service back (through the API,
    as a controller would, or by waiting for the amphora's init to restart it)."""

    def __init__(self, lab: Lab, amphora: Amphora, process: str,
                 restore: Callable[[], None]) -> None:
        self.description = f"kill {process} in {amphora.name}"
        self._lab, self._amphora, self._process, self._restore = lab, amphora, process, restore

    def apply(self) -> None:
        if self._process == "agent":
            argv = ["pkill", "-KILL", "-f", AGENT_PATTERN]
        else:
            argv = ["pkill", "-KILL", "-x", self._process]
        result = self._lab.provider.exec(self._amphora.node, argv)
        if not result.ok:
            raise FaultError(f"no {self._process} process to kill in {self._amphora.name}")

    def heal(self) -> None:
        self._restore()


def vip_port(lab: Lab, amphora: Amphora) -> Port:
    for port in amphora.ports:
        if port.network.spec.role == "vip":
            return port
    raise FaultError(f"{amphora.name} has no port on the VIP network")


class FaultInjector:
    """Applies faults to one lab and remembers them, so that heal_all() undoes what is left."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.active: list[Fault] = []

    def inject(self, fault: Fault) -> Fault:
        LOG.info("fault: %s", fault)
        fault.apply()
        self.active.append(fault)
        return fault

    def heal(self, fault: Fault) -> None:
        LOG.info("heal: %s", fault)
        fault.heal()
        self.active.remove(fault)

    def heal_all(self) -> list[str]:
        """Heal every active fault, newest first; returns what could not be healed."""
        errors = []
        for fault in reversed(list(self.active)):
            try:
                self.heal(fault)
            except Exception as exc:  # keep healing the others; report all failures
                errors.append(f"{fault}: {exc}")
                self.active.remove(fault)
        return errors

    # --- whole amphorae (engine operations) --------------------------------------------------

    def kill(self, amphora: Amphora) -> Fault:
        """SIGKILL the amphora: every process dies at once, as when a hypervisor crashes."""
        p, node = self.lab.provider, amphora.node
        return self.inject(EngineFault(f"kill {amphora.name}", lambda: p.kill(node),
                                       lambda: p.start(node)))

    def stop(self, amphora: Amphora, timeout_s: float = 10.0) -> Fault:
        """Graceful shutdown: the amphora's init stops keepalived, haproxy, then the agent."""
        p, node = self.lab.provider, amphora.node
        return self.inject(EngineFault(f"stop {amphora.name}",
                                       lambda: p.stop(node, timeout_s), lambda: p.start(node)))

    def pause(self, amphora: Amphora) -> Fault:
        """Freeze every process of the amphora (a hung VM)."""
        p, node = self.lab.provider, amphora.node
        return self.inject(EngineFault(f"pause {amphora.name}", lambda: p.pause(node),
                                       lambda: p.unpause(node)))

    def cut_vip_link(self, amphora: Amphora) -> Fault:
        """Take the amphora's VIP port down from the switch side."""
        p, node, mac = self.lab.provider, amphora.node, vip_port(self.lab, amphora).mac_address
        return self.inject(EngineFault(f"cut {amphora.name} off the VIP network",
                                       lambda: p.disconnect(node, mac),
                                       lambda: p.reconnect(node, mac)))

    # --- links between amphorae (host bridge rules) ------------------------------------------

    def partition(self, a: Amphora, b: Amphora) -> Fault:
        """Drop every frame between the two amphorae's VIP ports (VRRP included); clients still
        reach both."""
        mac_a, mac_b = (vip_port(self.lab, x).mac_address for x in (a, b))
        rules = [
            f"ether saddr {mac_a} ether daddr {mac_b} drop",
            f"ether saddr {mac_b} ether daddr {mac_a} drop",
        ]
        return self.inject(BridgeRules(self.lab, f"partition {a.name} | {b.name}", rules))

    def packet_loss(self, amphora: Amphora, percent: int) -> Fault:
        """Drop `percent` % of the frames to and from the amphora's VIP port, at random."""
        if not 0 < percent < 100:
            raise FaultError(f"loss must be between 1 and 99 percent, not {percent}")
        mac = vip_port(self.lab, amphora).mac_address
        rules = [
            f"ether saddr {mac} numgen random mod 100 < {percent} drop",
            f"ether daddr {mac} numgen random mod 100 < {percent} drop",
        ]
        return self.inject(BridgeRules(self.lab, f"{percent}% loss at {amphora.name}", rules))

    def delay(self, amphora: Amphora, delay_ms: int, jitter_ms: int = 0) -> Fault:
        """Delay the amphora's outgoing VIP traffic with tc netem in its data-plane namespace."""
        vrrp_ip = str(vip_port(self.lab, amphora).ip_address)
        interface = amphora.client.get_interface(vrrp_ip)
        return self.inject(NetemDelay(self.lab, amphora, interface, delay_ms, jitter_ms))

    # --- processes inside an amphora ---------------------------------------------------------

    def kill_haproxy(self, amphora: Amphora, lb_ids: list[str]) -> Fault:
        """SIGKILL every haproxy; healed by the controller's reload (which starts a stopped LB)."""
        def restore() -> None:
            for lb_id in lb_ids:
                amphora.client.lb_action(lb_id, "reload")
        return self.inject(ProcessKill(self.lab, amphora, "haproxy", restore))

    def kill_keepalived(self, amphora: Amphora) -> Fault:
        """SIGKILL keepalived (no priority-0 goodbye); healed by a vrrp start through the API."""
        return self.inject(ProcessKill(self.lab, amphora, "keepalived",
                                       lambda: amphora.client.vrrp_action("start")))

    def kill_agent(self, amphora: Amphora) -> Fault:
        """SIGKILL the agent; the amphora's init restarts it, the heal waits until it answers."""
        return self.inject(ProcessKill(self.lab, amphora, "agent",
                                       lambda: amphora.client.get_info()))
