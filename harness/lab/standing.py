"""A standing lab rebuilt from its state file (harness.lab.standing_state): its amphorae and
members as a Lab has them, with live driver clients, for the commands that follow `up`.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from harness.amphora_api.client import AmphoraClient
from harness.lab.agent_config import AgentSettings
from harness.lab.constants import AGENT_PORT, DATA_PLANE_MTU
from harness.lab.lab import LabAmphora, LabMember
from harness.lab.providers.base import AttachedPort, Network, NetworkSpec, Node, NodeSpec, Provider
from harness.lab.standing_state import (
    AmphoraRecord,
    LabRecord,
    NetworkRecord,
    NodeRecord,
    StandingLabError,
)
from harness.model.loadbalancer import VipPort, VipSubnet


class StandingLab:
    """The amphorae and members of a recorded lab, with live driver clients.

    Faults (harness.faults.kinds) need a lab's `id` and `provider` only, so a StandingLab
    stands in for the Lab that built it."""

    def __init__(self, record: LabRecord, provider: Provider) -> None:
        self.record = record
        self.id = record.lab_id
        self.provider = provider
        self.networks = {n.role: _network(record, n) for n in record.networks}
        self.amphorae = [self._amphora(a) for a in record.amphorae]
        self.members = [LabMember(id=m.id, node=self._node(m.node),
                                  address=IPv4Address(m.node.address)) for m in record.members]

    def close(self) -> None:
        for amphora in self.amphorae:
            amphora.client.close()

    def __enter__(self) -> StandingLab:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @property
    def lb_amphorae(self) -> list[LabAmphora]:
        return self.amphorae[: self.record.lb_amphorae]

    def gateway(self, role: str) -> IPv4Address:
        return self.networks[role].spec.gateway

    def addresses(self) -> dict[str, str]:
        """The symbolic addresses of fixtures/lbs/*.yaml: vip, m1, m2, ..."""
        return {"vip": self.record.vip} | {
            f"m{n}": str(m.address) for n, m in enumerate(self.members, start=1)}

    def amphora(self, target: str) -> LabAmphora:
        """An amphora by index (0, 1, ...), node name, or a prefix of its id."""
        if target.isdigit() and int(target) < len(self.amphorae):
            return self.amphorae[int(target)]
        matches = [a for a in self.amphorae
                   if target in (a.name, a.node.spec.hostname) or a.id.startswith(target)]
        if len(matches) != 1:
            names = ", ".join(f"{n} ({a.id[:8]})" for n, a in enumerate(self.amphorae))
            raise StandingLabError(f"{target!r} names {len(matches)} amphorae; "
                                   f"the lab has {names}")
        return matches[0]

    def vip_ports(self) -> list[VipPort]:
        """The VIP-network ports of the load balancer's amphorae, as a cloud reports them."""
        subnet = VipSubnet(cidr=str(self.networks["vip"].spec.subnet),
                           gateway=str(self.gateway("vip")))
        return [VipPort(mac_address=port.mac_address, vrrp_ip=str(port.ip_address),
                        subnet=subnet, mtu=DATA_PLANE_MTU)
                for amphora in self.lb_amphorae for port in amphora.ports
                if port.network.spec.role == "vip"]

    def vip_url(self, port: int | None = None) -> str | None:
        """The URL of a listener (the first one by default) of the pushed load balancer on the
        VIP; None before the first push. (Who answers there: harness.observe.vip.)"""
        lb = self.record.load_balancer
        return lb.url(self.record.vip, port) if lb is not None else None

    def _node(self, node: NodeRecord) -> Node:
        spec = NodeSpec(lab_id=self.id, role=node.role, name=node.name,
                        hostname=node.hostname, image=node.image,
                        network=self.networks[node.network_role],
                        address=IPv4Address(node.address))
        return Node(spec=spec, handle=node.handle)

    def _amphora(self, record: AmphoraRecord) -> LabAmphora:
        node = self._node(record.node)
        client = AmphoraClient(str(node.spec.address), AGENT_PORT, record.id,
                               self.record.driver)
        ports = [AttachedPort(self.networks[p.network_role], p.mac_address,
                              IPv4Address(p.ip_address)) for p in record.ports]
        return LabAmphora(id=record.id, node=node, mgmt_address=node.spec.address, client=client,
                          agent_settings=AgentSettings(**record.agent_settings),
                          ready_s=record.ready_s, ports=ports)


def _network(lab: LabRecord, network: NetworkRecord) -> Network:
    spec = NetworkSpec(lab_id=lab.lab_id, role=network.role, subnet=IPv4Network(network.subnet),
                       gateway=IPv4Address(network.gateway),
                       dynamic_range=IPv4Network(network.dynamic_range), lab_index=lab.index)
    return Network(spec=spec, name=network.name, handle=network.handle)
