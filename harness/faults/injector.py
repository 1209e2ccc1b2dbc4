"""Fault injection: every fault acts from outside the amphora (engine operations, the host's
bridges, tc in the data-plane namespace) or kills processes inside it — never through the agent.

Every fault has a heal. A FaultInjector remembers what it applied, so a test that fails while a
fault is active still leaves the lab healed (the plugin's `faults` fixture heals at teardown).

Link-level faults (partition, loss) are nftables rules of the `bridge` family on the host,
matched on the MAC addresses of the amphorae's ports: they need nothing inside the amphora, so
they work against any agent image. Each lives in a lab table of its own (harness.lab.host_tables),
so lab teardown and gc find what a crashed run left behind. Which bridge hook sees a frame
depends on where it comes from, so a rule about one port sits in the right hooks:

    prerouting  frames entering the bridge from a port (whatever their destination)
    forward     frames from one port to another
    output      frames the host itself sends into the bridge (the harness's client traffic)
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.host_tables import nft, table_name
from harness.lab.lab import Amphora, Lab
from harness.lab.providers.base import ExecResult, Port

LOG = logging.getLogger(__name__)

# Matches the agent's command line, ours (`python3 -m amphora_agent --config-file ...`) and
# Octavia's (`.../amphora-agent --config ...`), but not `amphora_agent.vrrp_check`, the check
# keepalived runs: killing that would fail a VRRP check, which is a different fault.
AGENT_PATTERN = "amphora[-_]agent( |$)"
IP_PROTOCOL_VRRP = 112
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


# --- host bridge rules ----------------------------------------------------------------------


def partition_rules(mac_a: str, mac_b: str) -> dict[str, list[str]]:
    """Every frame between two ports dropped, in both directions."""
    return {"forward": [f"ether saddr {mac_a} ether daddr {mac_b} counter drop",
                        f"ether saddr {mac_b} ether daddr {mac_a} counter drop"]}


def loss_rules(mac: str, percent: int, *, spare_vrrp: bool = False) -> dict[str, list[str]]:
    """`percent` % of the frames from and to one port dropped at random, each frame once.
    spare_vrrp leaves the port's VRRP packets alone (to lose those, see advert_loss_rules)."""
    if not 0 < percent < 100:
        raise FaultError(f"loss must be between 1 and 99 percent, not {percent}")
    chance = f"numgen random mod 100 < {percent} counter drop"
    spare = f"meta l4proto != {IP_PROTOCOL_VRRP} " if spare_vrrp else ""
    return {
        "prerouting": [f"ether saddr {mac} {spare}{chance}"],
        "forward": [f"ether daddr {mac} {spare}{chance}"],
        "output": [f"ether daddr {mac} {spare}{chance}"],
    }


def advert_loss_rules(mac: str, lost: int, every: int) -> dict[str, list[str]]:
    """Of every `every` VRRP packets the port sends, the first `lost` dropped — a fixed pattern,
    not a random one, so how many adverts in a row go missing is known exactly."""
    if not 0 < lost < every:
        raise FaultError(f"cannot lose {lost} of every {every} adverts")
    return {"prerouting": [f"ether saddr {mac} ip protocol {IP_PROTOCOL_VRRP} "
                           f"numgen inc mod {every} < {lost} counter drop"]}


class BridgeRules(Fault):
    """Frame-dropping rules on the host's bridges, in a table of their own; every rule counts
    what it dropped."""

    def __init__(self, lab_id: str, description: str, rules: dict[str, list[str]],
                 namespace: str | None = None) -> None:
        self.description = description
        self.table = table_name(lab_id, str(next(_table_numbers)))
        self.rules = rules
        self.namespace = namespace

    def script(self) -> str:
        """The nft script that creates the table: one base chain per hook."""
        chains = []
        for hook, rules in self.rules.items():
            body = "".join(f"    {rule}\n" for rule in rules)
            chains.append(f"  chain {hook} {{\n"
                          f"    type filter hook {hook} priority -10; policy accept;\n"
                          f"{body}  }}\n")
        return f"table bridge {self.table} {{\n{''.join(chains)}}}\n"

    def apply(self) -> None:
        result = nft(["-f", "-"], self.script(), self.namespace)
        if result.returncode != 0:
            raise FaultError(f"nft: {result.stderr.strip()}")

    def heal(self) -> None:
        result = nft(["delete", "table", "bridge", self.table], namespace=self.namespace)
        if result.returncode != 0 and "No such file" not in result.stderr:
            raise FaultError(f"nft: {result.stderr.strip()}")

    def dropped(self) -> int:
        """Frames the rules have dropped so far (0 once healed)."""
        result = nft(["-j", "list", "table", "bridge", self.table], namespace=self.namespace)
        if result.returncode != 0:
            return 0
        total = 0
        for item in json.loads(result.stdout)["nftables"]:
            for expression in item.get("rule", {}).get("expr", []):
                total += expression.get("counter", {}).get("packets", 0)
        return total


# --- engine operations, tc, processes ---------------------------------------------------------


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

    def _tc(self, *args: str) -> ExecResult:
        return self._lab.provider.exec(
            self._amphora.node,
            ["ip", "netns", "exec", DATA_PLANE_NAMESPACE, "tc", "qdisc", *args],
        )

    def apply(self) -> None:
        result = self._tc("add", "dev", self._interface, "root", "netem", *self._netem)
        if not result.ok:
            # tc says "Specified qdisc kind is unknown." when the kernel lacks sch_netem.
            if "unknown" in result.output.lower():
                raise FaultUnsupported(
                    f"this kernel has no sch_netem, so no delay can be added: "
                    f"{result.output.strip()}")
            raise FaultError(f"tc netem on {self._amphora.name}: {result.output.strip()}")

    def heal(self) -> None:
        result = self._tc("del", "dev", self._interface, "root")
        if not result.ok and "no qdisc" not in result.output.lower():
            raise FaultError(f"removing netem on {self._amphora.name}: {result.output.strip()}")


class ProcessKill(Fault):
    """SIGKILL a process inside an amphora; the heal brings the service back (through the API,
    as a controller would, or by waiting for the amphora's init to restart it)."""

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


def vip_port(amphora: Amphora) -> Port:
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
        self.active.remove(fault)
        fault.heal()

    def leave(self, fault: Fault) -> None:
        """Stop tracking a fault without healing it: its effect was dealt with otherwise (a
        controller replaced the amphora it killed)."""
        self.active.remove(fault)

    def heal_all(self) -> list[str]:
        """Heal every active fault, newest first; returns what could not be healed."""
        errors = []
        for fault in reversed(list(self.active)):
            try:
                self.heal(fault)
            except Exception as exc:  # keep healing the others; report all failures
                errors.append(f"{fault}: {exc}")
        return errors

    # --- whole amphorae (engine operations) --------------------------------------------------

    def kill(self, amphora: Amphora) -> Fault:
        """SIGKILL the amphora: every process dies at once, as when a hypervisor crashes. The
        heal boots it again; its agent then restores the ports and services it had."""
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
        p, node, mac = self.lab.provider, amphora.node, vip_port(amphora).mac_address
        return self.inject(EngineFault(f"cut {amphora.name} off the VIP network",
                                       lambda: p.disconnect(node, mac),
                                       lambda: p.reconnect(node, mac)))

    # --- links (host bridge rules) -----------------------------------------------------------

    def _bridge_rules(self, description: str, rules: dict[str, list[str]]) -> BridgeRules:
        fault = BridgeRules(self.lab.id, description, rules)
        self.inject(fault)
        return fault

    def partition(self, a: Amphora, b: Amphora) -> BridgeRules:
        """Drop every frame between the two amphorae's VIP ports (VRRP included); clients still
        reach both."""
        mac_a, mac_b = (vip_port(x).mac_address for x in (a, b))
        return self._bridge_rules(f"partition {a.name} | {b.name}", partition_rules(mac_a, mac_b))

    def packet_loss(self, amphora: Amphora, percent: int, *,
                    spare_vrrp: bool = False) -> BridgeRules:
        """Drop `percent` % of the frames to and from the amphora's VIP port, at random."""
        rules = loss_rules(vip_port(amphora).mac_address, percent, spare_vrrp=spare_vrrp)
        what = " (VRRP spared)" if spare_vrrp else ""
        return self._bridge_rules(f"{percent}% loss at {amphora.name}{what}", rules)

    def advert_loss(self, amphora: Amphora, lost: int, every: int) -> BridgeRules:
        """Drop `lost` of every `every` VRRP packets the amphora sends."""
        rules = advert_loss_rules(vip_port(amphora).mac_address, lost, every)
        return self._bridge_rules(f"{lost} of {every} adverts of {amphora.name} lost", rules)

    def delay(self, amphora: Amphora, delay_ms: int, jitter_ms: int = 0) -> Fault:
        """Delay the amphora's outgoing VIP traffic with tc netem in its data-plane namespace
        (raises FaultUnsupported where the kernel has no netem)."""
        interface = amphora.client.get_interface(str(vip_port(amphora).ip_address))
        return self.inject(NetemDelay(self.lab, amphora, interface, delay_ms, jitter_ms))

    # --- processes inside an amphora ---------------------------------------------------------

    def kill_haproxy(self, amphora: Amphora, lb_ids: list[str]) -> Fault:
        """SIGKILL every haproxy; healed by the controller's reload (which starts a stopped LB)."""
        def restore() -> None:
            for lb_id in lb_ids:
                amphora.client.lb_action(lb_id, "reload")
        return self._kill_process(amphora, "haproxy", restore)

    def kill_keepalived(self, amphora: Amphora) -> Fault:
        """SIGKILL keepalived (no priority-0 goodbye); healed by a vrrp start through the API."""
        return self._kill_process(amphora, "keepalived",
                                  lambda: amphora.client.vrrp_action("start"))

    def kill_agent(self, amphora: Amphora) -> Fault:
        """SIGKILL the agent; the amphora's init restarts it, the heal waits until it answers
        (the client's bounded retries)."""
        def kill() -> ExecResult:
            return self.lab.provider.exec(amphora.node,
                                          ["pkill", "-KILL", "-f", AGENT_PATTERN])
        return self.inject(ProcessKill(f"kill the agent in {amphora.name}", kill,
                                       lambda: amphora.client.get_info()))

    def _kill_process(self, amphora: Amphora, name: str, restore: Callable[[], None]) -> Fault:
        def kill() -> ExecResult:
            return self.lab.provider.kill_process(amphora.node, name)
        return self.inject(ProcessKill(f"kill {name} in {amphora.name}", kill, restore))
