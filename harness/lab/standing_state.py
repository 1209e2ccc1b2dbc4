"""The state file of a standing lab: a lab that outlives the command that built it
(`amphora-harness up`), found again by the next.

`up` builds a lab whose engine objects carry the keep label (so neither `gc` nor the pytest
plugin's start-of-session gc removes it), writes what later commands need into a state
directory, and exits. `status`, `push`, `traffic`, `fault`, `heal`, `down`, ... rebuild the lab's
amphorae and members from that record (harness.lab.standing):

    <state dir>/<lab id>/state.json   ids, nodes, images, addresses, ports, VIP, which agent the
                                      amphorae run (and from which Octavia), pushed LB, faults
    <state dir>/<lab id>/ca.pem       the lab CA (what the driver trusts)
    <state dir>/<lab id>/client.pem   the driver's key and certificate (mode 0600)

The state dir is $AMPHORA_HARNESS_STATE_DIR, else $XDG_STATE_HOME/amphora-harness/labs, else
~/.local/state/amphora-harness/labs. The CA key is not kept: a standing lab drives the amphorae
it has and boots no new ones. What does differ with the agent (harness.lab.octavia_agent: the
reindex after a port attach, how long an agent takes to answer, its config options) is decided by
the recorded agent: a lab rebuilt from its record is told its agent, Octavia source and images as
`up` told the Lab that built it (LabRecord.lab_options).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness.amphora_api.pki import DriverCredentials
from harness.lab.lab import Lab
from harness.lab.octavia_agent import OCTAVIA
from harness.lab.providers.base import Node
from harness.model.loadbalancer import ListenerProtocol
from harness.octavia_source import OctaviaSource, SourceKind

STATE_DIR_ENV = "AMPHORA_HARNESS_STATE_DIR"
STATE_FILE = "state.json"
# 2: the agent the amphorae run and the Octavia source of its image (agent, octavia_source).
SCHEMA = 2


class StandingLabError(RuntimeError):
    """No such lab, or no way to tell which one is meant."""


def state_root() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "amphora-harness" / "labs"


# --- what is written down -----------------------------------------------------------------------

@dataclass
class NodeRecord:
    name: str
    handle: str
    hostname: str
    image: str
    role: str
    network_role: str
    address: str


@dataclass
class PortRecord:
    network_role: str
    mac_address: str
    ip_address: str


@dataclass
class AmphoraRecord:
    id: str
    node: NodeRecord
    ready_s: float
    agent_settings: dict[str, Any]
    ports: list[PortRecord] = field(default_factory=list)


@dataclass
class MemberRecord:
    id: str
    node: NodeRecord


@dataclass
class NetworkRecord:
    role: str
    name: str
    handle: str
    subnet: str
    gateway: str
    dynamic_range: str


@dataclass
class LoadBalancerRecord:
    """The load balancer pushed last: its file (pushed again to restore an amphora) and id
    (kept across pushes, so a push updates the same load balancer as a controller would)."""

    source: str
    id: str
    listeners: list[dict[str, Any]]  # {"port", "protocol"}
    # A pair's VRRP password: pushing again (to restore an amphora) must not change it, or the
    # two keepalived would stop hearing each other.
    vrrp_auth_pass: str

    def url(self, vip: str, port: int | None = None) -> str:
        """The URL of a listener (the first one by default) on the VIP."""
        listener = self.listener(port)
        tls = listener["protocol"] == ListenerProtocol.TERMINATED_HTTPS.value
        scheme = "https" if tls else "http"
        return f"{scheme}://{vip}:{listener['port']}/"

    def listener(self, port: int | None = None) -> dict[str, Any]:
        for listener in self.listeners:
            if port in (None, listener["port"]):
                return listener
        ports = ", ".join(str(item["port"]) for item in self.listeners)
        raise StandingLabError(f"the load balancer has no listener on port {port} ({ports})")


@dataclass
class FaultRecord:
    kind: str
    targets: list[str]  # amphora ids
    options: dict[str, Any] = field(default_factory=dict)
    table: str | None = None  # the nft table of a link fault


@dataclass
class LabRecord:
    lab_id: str
    provider: str
    index: int
    topology: str
    lb_amphorae: int
    vip: str
    created_at: float
    networks: list[NetworkRecord]
    amphorae: list[AmphoraRecord]
    members: list[MemberRecord]
    # Which amphora-agent the amphorae run ("ours" | "octavia", harness.lab.octavia_agent), and
    # for Octavia's the source its image was built from ({"kind", "location"} of an
    # harness.octavia_source.OctaviaSource; None for ours).
    agent: str
    octavia_source: dict[str, str] | None
    load_balancer: LoadBalancerRecord | None = None
    faults: list[FaultRecord] = field(default_factory=list)
    fault_count: int = 0
    schema: int = SCHEMA

    @property
    def directory(self) -> Path:
        return state_root() / self.lab_id

    @property
    def driver(self) -> DriverCredentials:
        return DriverCredentials(ca=self.directory / "ca.pem",
                                 client_pem=self.directory / "client.pem")

    def lab_options(self) -> dict[str, Any]:
        """How `up` told the Lab that built this lab which amphorae and members it runs (agent,
        Octavia source, images): Lab(provider, **record.lab_options()) behaves as that Lab did
        (harness.lab.attach)."""
        source = None if self.octavia_source is None else OctaviaSource(
            SourceKind(self.octavia_source["kind"]), self.octavia_source["location"])
        return {"agent": self.agent, "octavia_source": source,
                "amphora_image": next((a.node.image for a in self.amphorae), None),
                "member_image": next((m.node.image for m in self.members), None)}

    def agent_label(self) -> str:
        """For people: which agent the amphorae run, and from which Octavia."""
        source = self.lab_options()["octavia_source"]
        return f"{self.agent} agent" + (f" ({source.label()})" if source else "")

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(path)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabRecord:
        if data.get("schema") != SCHEMA:
            raise StandingLabError(f"state of lab {data.get('lab_id')} has schema "
                                   f"{data.get('schema')}, this version reads {SCHEMA}")
        lb = data.get("load_balancer")
        return cls(
            **{k: v for k, v in data.items() if k not in
               ("networks", "amphorae", "members", "load_balancer", "faults")},
            networks=[NetworkRecord(**n) for n in data["networks"]],
            amphorae=[AmphoraRecord(id=a["id"], node=NodeRecord(**a["node"]),
                                    ready_s=a["ready_s"], agent_settings=a["agent_settings"],
                                    ports=[PortRecord(**p) for p in a["ports"]])
                      for a in data["amphorae"]],
            members=[MemberRecord(id=m["id"], node=NodeRecord(**m["node"]))
                     for m in data["members"]],
            load_balancer=LoadBalancerRecord(**lb) if lb else None,
            faults=[FaultRecord(**f) for f in data.get("faults", [])],
        )


def _node_record(node: Node) -> NodeRecord:
    spec = node.spec
    return NodeRecord(name=spec.name, handle=node.handle, hostname=spec.hostname,
                      image=spec.image, role=spec.role, network_role=spec.network.spec.role,
                      address=str(spec.address))


def record_lab(lab: Lab, *, provider_name: str, topology: str, lb_amphorae: int,
               vip: IPv4Address) -> LabRecord:
    """Write down a lab that is up (networks, nodes, ports, its agent) and keep its driver
    credentials."""
    if lab.index is None:
        raise StandingLabError("the lab is not up")
    source = lab.octavia_source if lab.agent == OCTAVIA else None
    record = LabRecord(
        lab_id=lab.id, provider=provider_name, index=lab.index, topology=topology,
        lb_amphorae=lb_amphorae, vip=str(vip), created_at=time.time(),
        networks=[NetworkRecord(role=role, name=n.name, handle=n.handle,
                                subnet=str(n.spec.subnet), gateway=str(n.spec.gateway),
                                dynamic_range=str(n.spec.dynamic_range))
                  for role, n in lab.networks.items()],
        amphorae=[AmphoraRecord(id=a.id, node=_node_record(a.node), ready_s=a.ready_s,
                                agent_settings=asdict(a.agent_settings),
                                ports=[PortRecord(p.network.spec.role, p.mac_address,
                                                  str(p.ip_address)) for p in a.ports])
                  for a in lab.amphorae],
        members=[MemberRecord(id=m.id, node=_node_record(m.node)) for m in lab.members],
        agent=lab.agent,
        octavia_source=None if source is None else {"kind": source.kind.value,
                                                    "location": source.location},
    )
    record.directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lab.pki.driver.ca, record.driver.ca)
    record.driver.client_pem.touch(mode=0o600)
    shutil.copyfile(lab.pki.driver.client_pem, record.driver.client_pem)
    record.save()
    return record


def load_record(lab_id: str) -> LabRecord:
    path = state_root() / lab_id / STATE_FILE
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("schema") != SCHEMA:
            raise StandingLabError(
                f"lab {lab_id} was brought up by an amphora-harness whose state file has schema "
                f"{data.get('schema')}; this one reads schema {SCHEMA} (which also records the "
                f"amphorae's agent): `amphora-harness down --lab {lab_id}` removes that lab, "
                "`amphora-harness up` brings up a new one")
        return LabRecord.from_dict(data)
    except FileNotFoundError:
        raise StandingLabError(f"no lab {lab_id} was brought up by `amphora-harness up` "
                               f"(nothing in {state_root()})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise StandingLabError(f"{path} is unreadable ({exc}); `amphora-harness down "
                               f"--lab {lab_id}` removes the lab") from None


def recorded_provider(lab_id: str) -> str | None:
    """The provider a lab's record names, also in a record this version cannot read (an older
    schema): enough for `down` to remove the lab. None: no record, or none named there."""
    try:
        data = json.loads((state_root() / lab_id / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    provider = data.get("provider") if isinstance(data, dict) else None
    return provider if isinstance(provider, str) else None


def recorded_lab_ids() -> list[str]:
    root = state_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{STATE_FILE}"))


def choose_lab(lab_id: str | None) -> LabRecord:
    """The lab asked for, or the only one there is."""
    if lab_id:
        return load_record(lab_id)
    ids = recorded_lab_ids()
    if not ids:
        raise StandingLabError("no lab is up (`amphora-harness up` brings one up)")
    if len(ids) > 1:
        raise StandingLabError(f"{len(ids)} labs are up ({', '.join(ids)}): "
                               "choose one with --lab ID")
    return load_record(ids[0])
