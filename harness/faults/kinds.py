"""Every kind of fault, once: its name, what it does, how many amphorae it acts on, which options
it takes, and how it is built against a lab's amphorae.

Both ways of injecting faults build them here: the pytest plugin's `faults` fixture (a
FaultInjector, harness.faults.injector) and the `fault` / `heal` commands on a standing lab
(harness.faults.standing). Building applies nothing: the caller applies a new fault, or heals
one that a previous command applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from harness.amphora_api.client import AmphoraAPIError
from harness.faults.base import Fault, FaultError
from harness.faults.link import BridgeRules, advert_loss_rules, loss_rules, partition_rules
from harness.faults.node import AGENT_PATTERN, EngineFault, NetemDelay, ProcessKill
from harness.lab.lab import READY_TIMEOUT_S, LabAmphora
from harness.lab.octavia_agent import OCTAVIA_READY_TIMEOUT_S
from harness.lab.providers.base import AttachedPort, ExecResult, Provider
from harness.polling import poll_until, scaled


class FaultLab(Protocol):
    """What building a fault needs of a lab: its id (a link fault's table carries it) and its
    provider. A Lab is one, and so is a StandingLab rebuilt from its record."""

    id: str
    provider: Provider


# The options a user may leave out, and what they are then (the command line's defaults).
# An option without a default (a load balancer's ids) must be given.
OPTION_DEFAULTS: dict[str, Any] = {
    "timeout_s": 10.0, "percent": 30, "spare_vrrp": False, "lost": 2, "every": 3,
    "delay_ms": 100, "jitter_ms": 0,
}

# How long the heal of kill-agent waits for the agent the amphora's init restarted: as long as
# a lab waits for the slowest agent to boot (harness.lab.lab, harness.lab.octavia_agent).
AGENT_RESTART_TIMEOUT_S = max(READY_TIMEOUT_S, OCTAVIA_READY_TIMEOUT_S)
AGENT_RESTART_POLL_S = 1.0

Builder = Callable[[FaultLab, Sequence[LabAmphora], Mapping[str, Any]], Fault]


@dataclass(frozen=True)
class FaultKind:
    name: str
    help: str
    targets: int  # how many amphorae it acts on
    make: Builder
    options: tuple[str, ...] = ()
    # Healing boots the amphora again; it then restores its own data plane (ports, load
    # balancers, keepalived), which a standing lab's heal waits for.
    restores: bool = False

    def build(self, lab: FaultLab, amphorae: Sequence[LabAmphora], **options: Any) -> Fault:
        """The fault against these amphorae, not applied; options it does not take are errors,
        those left out take their defaults."""
        if len(amphorae) != self.targets:
            raise FaultError(f"{self.name} acts on {self.targets}, not {len(amphorae)} amphorae")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise FaultError(f"{self.name} takes no {', '.join(unknown)}")
        values = {name: OPTION_DEFAULTS[name] for name in self.options
                  if name in OPTION_DEFAULTS} | options
        missing = [name for name in self.options if name not in values]
        if missing:
            raise FaultError(f"{self.name} needs {', '.join(missing)}")
        return self.make(lab, amphorae, values)

    def options_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The ones of `given` that this kind takes (a command line offers all of them)."""
        return {name: value for name, value in given.items() if name in self.options}


def vip_port(amphora: LabAmphora) -> AttachedPort:
    for port in amphora.ports:
        if port.network.spec.role == "vip":
            return port
    raise FaultError(f"{amphora.name} has no port on the VIP network")


# --- whole amphorae (engine operations) --------------------------------------------------------

def _kill(lab: FaultLab, amphorae: Sequence[LabAmphora], _options: Mapping[str, Any]) -> Fault:
    p, node = lab.provider, amphorae[0].node
    return EngineFault(f"kill {node.name}", lambda: p.kill(node), lambda: p.start(node))


def _stop(lab: FaultLab, amphorae: Sequence[LabAmphora], options: Mapping[str, Any]) -> Fault:
    p, node = lab.provider, amphorae[0].node
    return EngineFault(f"stop {node.name}", lambda: p.stop(node, options["timeout_s"]),
                       lambda: p.start(node))


def _pause(lab: FaultLab, amphorae: Sequence[LabAmphora], _options: Mapping[str, Any]) -> Fault:
    p, node = lab.provider, amphorae[0].node
    return EngineFault(f"pause {node.name}", lambda: p.pause(node), lambda: p.unpause(node))


def _cut_vip(lab: FaultLab, amphorae: Sequence[LabAmphora], _options: Mapping[str, Any]) -> Fault:
    p, node, mac = lab.provider, amphorae[0].node, vip_port(amphorae[0]).mac_address
    return EngineFault(f"cut {node.name} off the VIP network", lambda: p.disconnect(node, mac),
                       lambda: p.reconnect(node, mac))


# --- links (host bridge rules) -----------------------------------------------------------------

def _bridge_rules(lab: FaultLab, description: str, rules: dict[str, list[str]]) -> Fault:
    """Rules in a table of the lab's, applied where the lab's bridges are."""
    return BridgeRules(lab.id, description, rules, lab.provider.host_shell(lab.id))


def _partition(lab: FaultLab, amphorae: Sequence[LabAmphora],
               _options: Mapping[str, Any]) -> Fault:
    a, b = amphorae
    rules = partition_rules(vip_port(a).mac_address, vip_port(b).mac_address)
    return _bridge_rules(lab, f"partition {a.name} | {b.name}", rules)


def _loss(lab: FaultLab, amphorae: Sequence[LabAmphora], options: Mapping[str, Any]) -> Fault:
    amphora, percent, spare_vrrp = amphorae[0], options["percent"], options["spare_vrrp"]
    rules = loss_rules(vip_port(amphora).mac_address, percent, spare_vrrp=spare_vrrp)
    what = " (VRRP spared)" if spare_vrrp else ""
    return _bridge_rules(lab, f"{percent}% loss at {amphora.name}{what}", rules)


def _advert_loss(lab: FaultLab, amphorae: Sequence[LabAmphora],
                 options: Mapping[str, Any]) -> Fault:
    amphora, lost, every = amphorae[0], options["lost"], options["every"]
    rules = advert_loss_rules(vip_port(amphora).mac_address, lost, every)
    return _bridge_rules(lab, f"{lost} of {every} adverts of {amphora.name} lost", rules)


def _delay(lab: FaultLab, amphorae: Sequence[LabAmphora], options: Mapping[str, Any]) -> Fault:
    amphora = amphorae[0]
    interface = amphora.client.get_interface(str(vip_port(amphora).ip_address))
    return NetemDelay(lab.provider, amphora.node, interface, options["delay_ms"],
                      options["jitter_ms"])


# --- processes inside an amphora ---------------------------------------------------------------

def _kill_process(lab: FaultLab, amphora: LabAmphora, name: str,
                  restore: Callable[[], None]) -> Fault:
    def kill() -> ExecResult:
        return lab.provider.kill_process(amphora.node, name)
    return ProcessKill(f"kill {name} in {amphora.name}", kill, restore)


def _kill_haproxy(lab: FaultLab, amphorae: Sequence[LabAmphora],
                  options: Mapping[str, Any]) -> Fault:
    amphora = amphorae[0]

    def restore() -> None:
        for lb_id in options["lb_ids"]:
            amphora.client.lb_action(lb_id, "reload")
    return _kill_process(lab, amphora, "haproxy", restore)


def _kill_keepalived(lab: FaultLab, amphorae: Sequence[LabAmphora],
                     _options: Mapping[str, Any]) -> Fault:
    amphora = amphorae[0]
    return _kill_process(lab, amphora, "keepalived", lambda: amphora.client.vrrp_action("start"))


def _agent_answers(amphora: LabAmphora) -> bool:
    try:
        amphora.client.get_info()
    except (requests.RequestException, AmphoraAPIError):
        return False
    return True


def agent_back(amphora: LabAmphora, timeout_s: float) -> bool:
    """Whether the amphora's agent answers again within timeout_s (scaled): after its init
    restarted it (kill-agent's heal) or the amphora booted again (a standing lab's heal)."""
    return poll_until(lambda: _agent_answers(amphora), timeout_s, AGENT_RESTART_POLL_S)


def _kill_agent(lab: FaultLab, amphorae: Sequence[LabAmphora],
                _options: Mapping[str, Any]) -> Fault:
    amphora = amphorae[0]

    def kill() -> ExecResult:
        return lab.provider.exec(amphora.node, ["pkill", "-KILL", "-f", AGENT_PATTERN])

    def restarted() -> None:
        # As long as a lab waits for a booting agent: Octavia's, restarted by systemd, starts
        # as slowly as at boot (up to about a minute on a loaded host), longer than the
        # client's own retries last when the port refuses (30 attempts, 1 s apart).
        if not agent_back(amphora, AGENT_RESTART_TIMEOUT_S):
            raise FaultError(f"the agent in {amphora.name} did not answer again within "
                             f"{scaled(AGENT_RESTART_TIMEOUT_S):.0f}s")
    return ProcessKill(f"kill the agent in {amphora.name}", kill, restarted)


def _by_name(*kinds: FaultKind) -> dict[str, FaultKind]:
    return {kind.name: kind for kind in kinds}


KINDS: dict[str, FaultKind] = _by_name(
    FaultKind("kill", "SIGKILL the amphora (a crashed VM); heal: start it (it restores itself)",
              1, _kill, restores=True),
    FaultKind("stop", "graceful shutdown of the amphora (its init stops keepalived, haproxy, "
              "then the agent); heal: start it (it restores itself)",
              1, _stop, ("timeout_s",), restores=True),
    FaultKind("pause", "freeze every process of the amphora (a hung VM); heal: unpause",
              1, _pause),
    FaultKind("cut-vip", "take the amphora's VIP port down from the switch side",
              1, _cut_vip),
    FaultKind("partition", "drop every frame between two amphorae's VIP ports (VRRP too); "
              "clients still reach both", 2, _partition),
    FaultKind("loss", "drop --percent of the frames to and from the amphora's VIP port, at "
              "random", 1, _loss, ("percent", "spare_vrrp")),
    FaultKind("advert-loss", "drop the first `lost` of every `every` VRRP adverts the amphora "
              "sends (a fixed pattern; 2 of 3 unless set)", 1, _advert_loss, ("lost", "every")),
    FaultKind("delay", "delay the amphora's VIP traffic by --delay-ms (tc netem in its "
              "data-plane namespace; needs sch_netem)",
              1, _delay, ("delay_ms", "jitter_ms")),
    FaultKind("kill-haproxy", "SIGKILL haproxy in the amphora (a crash: the amphora restarts "
              "it, as Octavia's systemd unit does); heal: reload through the API (which starts "
              "it if it is still down)", 1, _kill_haproxy, ("lb_ids",)),
    FaultKind("kill-keepalived", "SIGKILL keepalived (no priority-0 goodbye); heal: vrrp start "
              "through the API", 1, _kill_keepalived),
    FaultKind("kill-agent", "SIGKILL the agent (the amphora's init restarts it); heal: wait "
              "until it answers", 1, _kill_agent),
)
