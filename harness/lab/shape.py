"""Lab topologies: how many amphorae in which arrangement, how many members, which load balancer.

A topology file (fixtures/topologies/<name>.yaml) says what `amphora-harness up` builds:

    topology: SINGLE          # or ACTIVE_STANDBY (a VRRP pair)
    amphorae: 1               # optional: at least what the topology needs; more are spares
    members: 3
    load_balancer: http       # optional: fixtures/lbs/<name>.yaml or a path to a YAML file

The command's flags override single fields. Everything is checked before anything boots: a
typo must not cost a minute of booting before it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from harness.model.loadbalancer import AMPHORAE_PER_TOPOLOGY, ModelError, Topology
from harness.model.yaml_loader import LbDefinition, lb_fixture
from harness.paths import FIXTURES_DIR

TOPOLOGIES_DIR = FIXTURES_DIR / "topologies"
DEFAULT_TOPOLOGY = "single"
MAX_AMPHORAE = 8
MAX_MEMBERS = 20
FIELDS = ("description", "topology", "amphorae", "members", "load_balancer")


class TopologyError(ValueError):
    """A topology (file or flags) is not usable; the message says which field and why."""


@dataclass(frozen=True)
class LabTopology:
    name: str
    topology: Topology = Topology.SINGLE
    amphorae: int = 1
    members: int = 2
    load_balancer: Path | None = None
    description: str = ""

    @property
    def lb_amphorae(self) -> int:
        """How many of the amphorae carry the load balancer (the rest are spares)."""
        return AMPHORAE_PER_TOPOLOGY[self.topology]

    def checked(self) -> LabTopology:
        """self, if every field is usable; TopologyError naming the first that is not."""
        if not self.lb_amphorae <= self.amphorae <= MAX_AMPHORAE:
            raise TopologyError(
                f"{self.name}: amphorae must be {self.lb_amphorae}..{MAX_AMPHORAE} for "
                f"{self.topology.value}, not {self.amphorae}")
        if not 0 <= self.members <= MAX_MEMBERS:
            raise TopologyError(f"{self.name}: members must be 0..{MAX_MEMBERS}, "
                                f"not {self.members}")
        if self.load_balancer is not None:
            check_lb_file(self.load_balancer, self.members)
        return self


def member_names(count: int) -> list[str]:
    """The symbolic member addresses fixtures use: m1, m2, ..."""
    return [f"m{n}" for n in range(1, count + 1)]


def check_lb_file(path: Path, members: int) -> None:
    """Load the file with placeholder addresses, so a bad key or a member the lab will not have
    is reported now (ModelError names the field)."""
    placeholders = {"vip": "192.0.2.1"} | {
        name: f"192.0.2.{n}" for n, name in enumerate(member_names(members), start=10)}
    try:
        definition = LbDefinition.read(path)
        certificates = dict.fromkeys(definition.certificate_names,
                                     b"-----BEGIN placeholder-----")
        definition.load(addresses=placeholders, certificates=certificates)
    except (OSError, ModelError) as exc:
        raise TopologyError(f"{path}: {exc}") from None


def resolve_lb(name_or_path: str) -> Path:
    """A load-balancer definition: a path to a YAML file, or the name of one in fixtures/lbs/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not path.is_file():
            raise TopologyError(f"no such load-balancer file: {name_or_path}")
        return path.resolve()
    fixture = lb_fixture(name_or_path)
    if not fixture.is_file():
        known = ", ".join(sorted(p.stem for p in fixture.parent.glob("*.yaml")))
        raise TopologyError(f"no load balancer named {name_or_path!r} (there are {known})")
    return fixture


def topology_file(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    named = TOPOLOGIES_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in TOPOLOGIES_DIR.glob("*.yaml")))
    raise TopologyError(f"no topology {name_or_path!r} (a file, or one of: {known})")


def parse_topology(value: Any) -> Topology:
    text = str(value).upper().replace("-", "_")
    try:
        return Topology(text)
    except ValueError:
        raise TopologyError(f"topology must be SINGLE or ACTIVE_STANDBY, not {value!r}") \
            from None


def load_topology(name_or_path: str = DEFAULT_TOPOLOGY) -> LabTopology:
    path = topology_file(name_or_path)
    data = _yaml(path)
    if not isinstance(data, dict):
        raise TopologyError(f"{path}: expected a mapping of {', '.join(FIELDS)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise TopologyError(f"{path}: unknown keys: {', '.join(map(str, unknown))}")
    topology = parse_topology(data.get("topology", "SINGLE"))
    lb = data.get("load_balancer")
    return LabTopology(
        name=path.stem,
        topology=topology,
        amphorae=_count(data.get("amphorae", AMPHORAE_PER_TOPOLOGY[topology]), "amphorae", path),
        members=_count(data.get("members", LabTopology.members), "members", path),
        load_balancer=_relative_lb(lb, path) if lb else None,
        description=str(data.get("description", "")),
    ).checked()


def with_overrides(base: LabTopology, *, topology: str | None = None,
                   amphorae: int | None = None, members: int | None = None,
                   load_balancer: str | None = None, no_load_balancer: bool = False
                   ) -> LabTopology:
    """base with the fields the command line sets. Changing the arrangement without saying how
    many amphorae resets their number to what the new arrangement needs."""
    changes: dict[str, Any] = {}
    if topology is not None:
        changes["topology"] = parse_topology(topology)
        if amphorae is None:
            changes["amphorae"] = AMPHORAE_PER_TOPOLOGY[changes["topology"]]
    if amphorae is not None:
        changes["amphorae"] = amphorae
    if members is not None:
        changes["members"] = members
    if no_load_balancer:
        changes["load_balancer"] = None
    elif load_balancer is not None:
        changes["load_balancer"] = resolve_lb(load_balancer)
    return replace(base, **changes).checked()


def _relative_lb(value: Any, topology_path: Path) -> Path:
    """A topology names its load balancer like the --lb flag, or by a path relative to itself."""
    relative = topology_path.parent / str(value)
    return relative.resolve() if relative.is_file() else resolve_lb(str(value))


def _count(value: Any, name: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopologyError(f"{path}: {name} must be a whole number, not {value!r}")
    return value


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: {exc}") from None
