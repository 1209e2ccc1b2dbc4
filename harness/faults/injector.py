"""The faults of one lab, remembered: a test that fails while a fault is active still leaves the
lab healed (the plugin's `faults` fixture calls heal_all at teardown).

Each method injects the kind of fault of the same name in harness.faults.kinds (which says what
it does) against the lab's amphorae, and returns it for the test to heal or leave.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.faults.base import Fault
from harness.faults.kinds import KINDS, FaultLab
from harness.faults.link import BridgeRules
from harness.lab.lab import LabAmphora

LOG = logging.getLogger(__name__)


class FaultInjector:
    """Applies faults to one lab and remembers them, so that heal_all() undoes what is left."""

    def __init__(self, lab: FaultLab) -> None:
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

    def inject_kind(self, kind: str, *amphorae: LabAmphora, **options: Any) -> Fault:
        """Build a fault of that kind against the amphorae, and inject it."""
        return self.inject(KINDS[kind].build(self.lab, amphorae, **options))

    # --- whole amphorae (engine operations) --------------------------------------------------

    def kill(self, amphora: LabAmphora) -> Fault:
        return self.inject_kind("kill", amphora)

    def stop(self, amphora: LabAmphora, timeout_s: float = 10.0) -> Fault:
        return self.inject_kind("stop", amphora, timeout_s=timeout_s)

    def pause(self, amphora: LabAmphora) -> Fault:
        return self.inject_kind("pause", amphora)

    def cut_vip_link(self, amphora: LabAmphora) -> Fault:
        return self.inject_kind("cut-vip", amphora)

    # --- links (host bridge rules) -----------------------------------------------------------

    def partition(self, a: LabAmphora, b: LabAmphora) -> BridgeRules:
        return self._bridge_rules("partition", a, b)

    def packet_loss(self, amphora: LabAmphora, percent: int, *,
                    spare_vrrp: bool = False) -> BridgeRules:
        return self._bridge_rules("loss", amphora, percent=percent, spare_vrrp=spare_vrrp)

    def advert_loss(self, amphora: LabAmphora, lost: int, every: int) -> BridgeRules:
        return self._bridge_rules("advert-loss", amphora, lost=lost, every=every)

    def _bridge_rules(self, kind: str, *amphorae: LabAmphora, **options: Any) -> BridgeRules:
        fault = KINDS[kind].build(self.lab, amphorae, **options)
        if not isinstance(fault, BridgeRules):
            raise TypeError(f"the {kind} kind builds no bridge rules")
        self.inject(fault)
        return fault

    def delay(self, amphora: LabAmphora, delay_ms: int, jitter_ms: int = 0) -> Fault:
        """Raises FaultUnsupported where the kernel has no netem."""
        return self.inject_kind("delay", amphora, delay_ms=delay_ms, jitter_ms=jitter_ms)

    # --- processes inside an amphora ---------------------------------------------------------

    def kill_haproxy(self, amphora: LabAmphora, lb_ids: list[str]) -> Fault:
        """lb_ids: the load balancers the heal reloads (a reload starts a stopped one)."""
        return self.inject_kind("kill-haproxy", amphora, lb_ids=lb_ids)

    def kill_keepalived(self, amphora: LabAmphora) -> Fault:
        return self.inject_kind("kill-keepalived", amphora)

    def kill_agent(self, amphora: LabAmphora) -> Fault:
        return self.inject_kind("kill-agent", amphora)
