"""Faults on a standing lab, applied by one command and healed by a later one.

The kinds of fault are harness.faults.kinds'; this module records each one applied in the lab's
state file, and builds it again later to heal it. An amphora that was killed or stopped comes
back through the engine and restores its own data plane (ports, load balancers, keepalived)
before its agent answers: the heal waits for that and checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.faults.base import Fault
from harness.faults.kinds import KINDS, FaultKind, agent_back
from harness.faults.link import BridgeRules
from harness.lab.host_tables import table_name
from harness.lab.lab import LabAmphora
from harness.lab.octavia_agent import (
    BOOT_DONE_STATES,
    BOOT_STATE_ARGV,
    OCTAVIA,
    OCTAVIA_READY_TIMEOUT_S,
)
from harness.lab.standing import StandingLab
from harness.lab.standing_state import FaultRecord, StandingLabError
from harness.observe.vip import answering_amphora
from harness.polling import poll_until, scaled

AGENT_BACK_TIMEOUT_S = 90.0
# Octavia's agent starts as slowly as at boot (systemd, then its Python start), and the amphora
# puts its ports back first: as long as a lab gives it to answer at boot, at least.
OCTAVIA_AGENT_BACK_TIMEOUT_S = max(AGENT_BACK_TIMEOUT_S, OCTAVIA_READY_TIMEOUT_S)


def targets_for(lab: StandingLab, kind: FaultKind, names: list[str]) -> list[LabAmphora]:
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
            url = lab.vip_url()
            amphora = answering_amphora(url, lab.amphorae) if url else None
            if amphora is None:
                raise StandingLabError("no amphora answers on the VIP, so none is active")
            chosen.append(amphora)
        else:
            chosen.append(lab.amphora(name))
    return chosen


def _build(lab: StandingLab, kind: FaultKind, amphorae: list[LabAmphora],
           options: dict[str, Any]) -> Fault:
    """The fault with what the lab's record knows added: which load balancer a haproxy kill's
    heal reloads."""
    if "lb_ids" in kind.options:
        lb = lab.record.load_balancer
        if lb is None:
            raise StandingLabError("no load balancer is pushed; nothing to restore haproxy for")
        options = {**options, "lb_ids": [lb.id]}
    return kind.build(lab, amphorae, **options)


def apply_fault(lab: StandingLab, kind_name: str, names: list[str],
                options: dict[str, Any]) -> Fault:
    """Apply a fault and record it; options the kind does not take are ignored (the command
    line offers every kind's)."""
    kind = KINDS[kind_name]
    amphorae = targets_for(lab, kind, names)
    given = kind.options_of(options)
    fault = _build(lab, kind, amphorae, given)
    record = FaultRecord(kind=kind_name, targets=[a.id for a in amphorae], options=given)
    if isinstance(fault, BridgeRules):
        # A table name unique in this lab across commands (each process counts from 1).
        lab.record.fault_count += 1
        fault.table = table_name(lab.id, f"cli{lab.record.fault_count}")
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
        fault = _build(lab, kind, amphorae, kind.options_of(record.options))
        if record.table and isinstance(fault, BridgeRules):
            fault.table = record.table
        on_step(f"healing: {fault}")
        try:
            fault.heal()
            if kind.restores:
                on_step(f"restoring {amphorae[0].name}")
                restore_amphora(lab, amphorae[0])
        except Exception as exc:  # heal the others anyway; say what failed
            errors.append(f"{fault}: {exc}")
        lab.record.faults.remove(record)
        lab.record.save()
    return errors


def restore_amphora(lab: StandingLab, amphora: LabAmphora) -> None:
    """An amphora started again plugs its ports again and starts what ran before its agent
    answers (its namespace lived on a tmpfs): wait for the agent, then check that every
    listener it has is serving. Which agent the lab's amphorae run (its record says) decides
    how long that may take, and what "restored" means: Octavia's agent answers before systemd
    has started the amphora's namespace and haproxy units, so there the boot must be over too."""
    octavia = lab.record.agent == OCTAVIA
    timeout_s = OCTAVIA_AGENT_BACK_TIMEOUT_S if octavia else AGENT_BACK_TIMEOUT_S
    if not agent_back(amphora, timeout_s):
        raise StandingLabError(f"the agent of {amphora.name} did not answer within "
                               f"{scaled(timeout_s):.0f}s (see `amphora-harness logs`)")
    if octavia and not poll_until(lambda: _boot_state(lab, amphora) in BOOT_DONE_STATES,
                                  timeout_s, 0.5):
        raise StandingLabError(f"{amphora.name} is still booting after {scaled(timeout_s):.0f}s "
                               f"(systemd: {_boot_state(lab, amphora)}; see `amphora-harness "
                               f"logs`)")
    down = [item["uuid"] for item in amphora.client.get_listeners()
            if item["status"] != "ACTIVE"]
    if down:
        raise StandingLabError(f"{amphora.name} came back with listeners not serving: "
                               f"{', '.join(down)} (see `amphora-harness logs`)")


def _boot_state(lab: StandingLab, amphora: LabAmphora) -> str:
    """systemd's state of an Octavia amphora's boot (starting, running, degraded, ...)."""
    return lab.provider.exec(amphora.node, list(BOOT_STATE_ARGV)).output.strip()
