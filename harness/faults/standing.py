"""Faults on a standing lab, applied by one command and healed by a later one.

The faults themselves are harness.faults.injector's; this module names them for the command line,
records
each one applied in the lab's state file, and builds it again later to heal it. An amphora that
was killed or stopped comes back through the engine and restores its own data plane (ports, load
balancers, keepalived) before its agent answers: the heal waits for that and checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from harness.amphora_api.client import AmphoraAPIError
from harness.faults.injector import BridgeRules, Fault, FaultInjector
from harness.lab.lab import Amphora
from harness.lab.standing import FaultRecord, StandingLab, StandingLabError

AGENT_BACK_TIMEOUT_S = 90.0


class _Builder(FaultInjector):
    """A FaultInjector that builds faults without applying them: the caller applies a new one,
    or heals one a previous command applied."""

    def inject(self, fault: Fault) -> Fault:
        return fault


@dataclass(frozen=True)
class FaultKind:
    help: str
    targets: int  # how many amphorae it acts on
    build: Callable[[_Builder, list[Amphora], dict, StandingLab], Fault]
    # After the heal: the amphora rebooted; wait until it serves its load balancer again.
    restore: bool = False


def _lb_ids(lab: StandingLab) -> list[str]:
    lb = lab.record.load_balancer
    if lb is None:
        raise StandingLabError("no load balancer is pushed; nothing to restore haproxy for")
    return [lb.id]


KINDS: dict[str, FaultKind] = {
    "kill": FaultKind("SIGKILL the amphora (a crashed VM); heal: start it (it restores itself)",
                      1, lambda f, a, o, lab: f.kill(a[0]), restore=True),
    "stop": FaultKind("graceful shutdown of the amphora; heal: start it (it restores itself)",
                      1, lambda f, a, o, lab: f.stop(a[0]), restore=True),
    "pause": FaultKind("freeze every process of the amphora (a hung VM); heal: unpause",
                       1, lambda f, a, o, lab: f.pause(a[0])),
    "cut-vip": FaultKind("take the amphora's VIP port down from the switch side",
                         1, lambda f, a, o, lab: f.cut_vip_link(a[0])),
    "partition": FaultKind("drop every frame between two amphorae's VIP ports (VRRP too)",
                           2, lambda f, a, o, lab: f.partition(a[0], a[1])),
    "loss": FaultKind("drop --percent of the frames to and from the amphora's VIP port",
                      1, lambda f, a, o, lab: f.packet_loss(a[0], o["percent"])),
    "delay": FaultKind("delay the amphora's VIP traffic by --delay-ms (tc netem)",
                       1, lambda f, a, o, lab: f.delay(a[0], o["delay_ms"], o["jitter_ms"])),
    "kill-haproxy": FaultKind("SIGKILL haproxy in the amphora; heal: reload through the API",
                              1, lambda f, a, o, lab: f.kill_haproxy(a[0], _lb_ids(lab))),
    "kill-keepalived": FaultKind("SIGKILL keepalived; heal: vrrp start through the API",
                                 1, lambda f, a, o, lab: f.kill_keepalived(a[0])),
    "kill-agent": FaultKind("SIGKILL the agent (the amphora's init restarts it)",
                            1, lambda f, a, o, lab: f.kill_agent(a[0])),
}


def targets_for(lab: StandingLab, kind: FaultKind, names: list[str]) -> list[Amphora]:
    """The amphorae a fault acts on. `active` is the one answering on the VIP now; with no
    names, a two-amphora fault takes the load balancer's pair."""
    if not names and kind.targets == 2 and len(lab.lb_amphorae) == 2:
        return list(lab.lb_amphorae)
    if len(names) != kind.targets:
        raise StandingLabError(f"this fault acts on {kind.targets} "
                               f"amphora{'e' if kind.targets > 1 else ''}, {len(names)} given")
    chosen = []
    for name in names:
        if name == "active":
            amphora = lab.answering_amphora()
            if amphora is None:
                raise StandingLabError("no amphora answers on the VIP, so none is active")
            chosen.append(amphora)
        else:
            chosen.append(lab.amphora(name))
    return chosen


def apply_fault(lab: StandingLab, kind_name: str, names: list[str], options: dict) -> Fault:
    kind = KINDS[kind_name]
    amphorae = targets_for(lab, kind, names)
    fault = kind.build(_Builder(lab), amphorae, options, lab)
    record = FaultRecord(kind=kind_name, targets=[a.id for a in amphorae], options=options)
    if isinstance(fault, BridgeRules):
        # A table name unique in this lab across commands (each process counts from 1).
        lab.record.fault_count += 1
        fault.table = f"{fault.table.rsplit('_', 1)[0]}_cli{lab.record.fault_count}"
        record.table = fault.table
    fault.apply()
    lab.record.faults.append(record)
    lab.record.save()
    return fault


def heal_faults(lab: StandingLab, on_step: Callable[[str], None] = lambda _: None
                ) -> list[str]:
    """Heal every recorded fault, newest first; returns what could not be healed (the others
    are healed and forgotten all the same)."""
    errors = []
    for record in reversed(list(lab.record.faults)):
        kind = KINDS[record.kind]
        amphorae = [lab.amphora(amphora_id) for amphora_id in record.targets]
        fault = kind.build(_Builder(lab), amphorae, record.options, lab)
        if record.table and isinstance(fault, BridgeRules):
            fault.table = record.table
        on_step(f"healing: {fault}")
        try:
            fault.heal()
            if kind.restore:
                on_step(f"restoring {amphorae[0].name}")
                restore_amphora(lab, amphorae[0])
        except Exception as exc:  # heal the others anyway; say what failed
            errors.append(f"{fault}: {exc}")
        lab.record.faults.remove(record)
        lab.record.save()
    return errors


def restore_amphora(lab: StandingLab, amphora: Amphora) -> None:
    """An amphora started again plugs its ports again and starts what ran before its agent
    answers (its namespace lived on a tmpfs): wait for the agent, then check that every
    listener it has is serving."""
    tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((AmphoraAPIError, OSError)),
        stop=tenacity.stop_after_delay(AGENT_BACK_TIMEOUT_S),
        wait=tenacity.wait_fixed(1.0), reraise=True,
    )(amphora.client.get_info)
    down = [item["uuid"] for item in amphora.client.get_listeners()
            if item["status"] != "ACTIVE"]
    if down:
        raise StandingLabError(f"{amphora.name} came back with listeners not serving: "
                               f"{', '.join(down)} (see `amphora-harness logs`)")
