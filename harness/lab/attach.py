"""A standing lab (`amphora-harness up`) lent to a pytest session: `pytest --lab ID` runs tests
against it instead of building a lab per module, so one scenario can be fixed and run again in
seconds (Molecule's converge/verify loop).

The AttachedLab is a Lab whose networks, amphorae and members are the standing lab's:

- add_amphorae and add_members hand out the lab's own nodes (amphorae whose agent settings are
  the ones asked for); a test that needs more than the lab has fails with a message saying how
  to bring such a lab up. Nothing is booted in their place: the lab's CA key is not kept.
- Ports are reused: an amphora that already has a port on a network (`up` plugs the member
  network and attaches a VIP port) gets no second one; allocate_vip gives the lab's VIP first.
- At down() (the end of each test module) the lab is put back as it was lent: load balancers
  created on its amphorae are deleted, ports attached to them detached, client nodes booted for
  the tests removed. The lab itself, its nodes and its record stay; nothing is torn down.

Bring the lab up without a load balancer (`amphora-harness up empty`, or `--no-lb`) for suites
that push their own on the lab's VIP.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import asdict
from pathlib import Path

from harness.lab import cleanup
from harness.lab.errors import LabError
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.lab.providers.base import AttachedPort, Provider
from harness.lab.standing import StandingLab
from harness.lab.standing_state import LabRecord
from harness.render.amphora_configs import AmphoraPaths


class AttachedLab(Lab):
    """The standing lab of record, lent (see the module docstring)."""

    def __init__(self, record: LabRecord, provider: Provider, *,
                 results_dir: Path | None = None) -> None:
        # Told its agent, Octavia source and images as `up` told the Lab that built it, so it
        # plugs, waits and renders agent settings as that Lab did (an Octavia agent's port
        # attach runs the image's reindex helper).
        super().__init__(provider, keep=True, results_dir=results_dir, **record.lab_options())
        self.id = record.lab_id
        self.record = record
        self._standing = StandingLab(record, provider)
        # The lab's amphorae trust its own CA; this PKI (a new CA) only issues what tests ask
        # for themselves, such as listener certificates.
        self.pki.driver = record.driver
        self.index = record.index
        self.networks = dict(self._standing.networks)
        for node in [a.node for a in self._standing.amphorae] + \
                [m.node for m in self._standing.members]:
            role = node.spec.network.spec.role
            self._nodes_per_network[role] += 1
        self._lbs_before: dict[str, set[str]] = {}
        self._new_ports: list[tuple[LabAmphora, AttachedPort]] = []

    def up(self) -> AttachedLab:
        cleanup.track(self)  # put back as lent also when the session is cancelled
        return self

    # --- handing out the lab's nodes ----------------------------------------------------------

    def add_amphorae(self, count: int, **agent_settings) -> list[LabAmphora]:
        lent = {a.id for a in self.amphorae}
        wanted = self._agent_settings(agent_settings)  # as a Lab of this agent would boot them
        fitting = [a for a in self._standing.amphorae if a.id not in lent and all(
            asdict(a.agent_settings).get(key) == value for key, value in wanted.items())]
        if len(fitting) < count:
            wanted = ", ".join(f"{k}={v!r}" for k, v in agent_settings.items()) or "defaults"
            raise LabError(
                f"lab {self.id} has {len(fitting)} more amphorae with agent settings {wanted}; "
                f"the test asks for {count} (bring up a lab that has them, e.g. "
                f"`amphora-harness up --amphorae N --active-standby`, or run without --lab)")
        chosen = fitting[:count]
        for amphora in chosen:
            self._lbs_before[amphora.id] = self._load_balancers(amphora)
        self.amphorae += chosen
        return chosen

    def add_members(self, count: int) -> list[LabMember]:
        lent = {m.id for m in self.members}
        fitting = [m for m in self._standing.members if m.id not in lent]
        if len(fitting) < count:
            raise LabError(f"lab {self.id} has {len(fitting)} more members; the test asks for "
                           f"{count} (`amphora-harness up --members N`, or run without --lab)")
        self.members += fitting[:count]
        return fitting[:count]

    def attach_port(self, amphora: LabAmphora, network_role: str) -> AttachedPort:
        for port in amphora.ports:
            if port.network.spec.role == network_role:
                return port
        port = super().attach_port(amphora, network_role)
        self._new_ports.append((amphora, port))
        return port

    def _client_label(self, number: int) -> str:
        # Unique: a session killed before its down() leaves its client in the lab.
        return f"client-{number}-{secrets.token_hex(3)}"

    # --- giving it back -----------------------------------------------------------------------

    def down(self) -> None:
        """Put the lab back as it was lent; nothing of it is torn down."""
        if self._is_down:
            return
        self._is_down = True
        cleanup.forget(self)
        errors = []
        try:
            self._save_logs()
        finally:
            for amphora in self.amphorae:
                for lb_id in sorted(self._load_balancers(amphora) -
                                    self._lbs_before.get(amphora.id, set())):
                    errors += _attempt(f"deleting load balancer {lb_id} on {amphora.name}",
                                       lambda a=amphora, i=lb_id: a.client.delete_lb(i))
            for amphora, port in self._new_ports:
                errors += _attempt(f"detaching {port.mac_address} from {amphora.name}",
                                   lambda a=amphora, p=port: self.provider.detach_port(
                                       a.node, p.network))
            for node in self.clients:
                errors += _attempt(f"removing {node.name}",
                                   lambda n=node: self.provider.remove_node(n))
            self._standing.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise LabError(f"lab {self.id} not put back as lent: {'; '.join(errors)}")

    def _load_balancers(self, amphora: LabAmphora) -> set[str]:
        """The ids of the load balancers whose config the amphora's agent holds."""
        base = AmphoraPaths().base_path
        listing = self.provider.exec(amphora.node, ["sh", "-c", f"ls {base}/*/haproxy.cfg"])
        return {line.split("/")[-2] for line in listing.output.split() if line.endswith(".cfg")}


def _attempt(what: str, action) -> list[str]:
    try:
        action()
    except Exception as exc:  # every step is tried; the failures are reported together
        return [f"{what}: {exc}"]
    return []
