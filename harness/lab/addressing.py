"""The lab's address plan: which addresses a lab's networks, nodes, VIPs and hot-plugged ports get.

Networks follow an Octavia deployment: lb-mgmt (controller <-> agents), vip (clients <-> VIP)
and member (haproxy <-> backends). Each is a /24 from 198.18.0.0/15 (set aside for benchmarking),
the three of lab index i at /24 number 3i, 3i+1, 3i+2, so labs side by side never overlap.
Within each /24:

    .1          the host (bridge gateway): the harness's client, traffic and heartbeat receiver
    .2 - .99    addresses the lab hands to nodes it boots (amphora management, members, clients)
    .100 - .127 VIPs (vip network), kept out of the engine's range as Neutron keeps a VIP port
    .128 - .254 the engine's range: hot-plugged ports get their fixed IP from here
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from harness.lab.errors import LabError

LAB_ADDRESS_SPACE = IPv4Network("198.18.0.0/15")
NETWORK_ROLES = ("lb-mgmt", "vip", "member")
MAX_LABS = LAB_ADDRESS_SPACE.num_addresses // 256 // len(NETWORK_ROLES)
NODE_HOSTS = range(2, 100)
VIP_HOSTS = range(100, 128)
DYNAMIC_RANGE_PREFIX = 25  # the upper half: .128/25


@dataclass(frozen=True)
class SubnetPlan:
    """The addressing of one lab network (see the module docstring)."""

    subnet: IPv4Network

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet[1]

    @property
    def dynamic_range(self) -> IPv4Network:
        return list(self.subnet.subnets(new_prefix=DYNAMIC_RANGE_PREFIX))[-1]

    def node_address(self, n: int) -> IPv4Address:
        return self._host(NODE_HOSTS, n, "node addresses")

    def vip_address(self, n: int) -> IPv4Address:
        return self._host(VIP_HOSTS, n, "VIPs")

    def _host(self, hosts: range, n: int, what: str) -> IPv4Address:
        if not 0 <= n < len(hosts):
            raise LabError(f"{self.subnet} has room for {len(hosts)} {what}")
        return self.subnet[hosts[n]]


def subnet_plan(lab_index: int, role: str) -> SubnetPlan:
    if not 0 <= lab_index < MAX_LABS:
        raise LabError(f"lab index {lab_index} is outside 0..{MAX_LABS - 1}")
    block = lab_index * len(NETWORK_ROLES) + NETWORK_ROLES.index(role)
    base = LAB_ADDRESS_SPACE.network_address + block * 256
    return SubnetPlan(IPv4Network(f"{base}/24"))


def lab_index_of(address: IPv4Address) -> int | None:
    """The lab index whose address block holds address, or None outside the lab space."""
    if address not in LAB_ADDRESS_SPACE:
        return None
    block = (int(address) - int(LAB_ADDRESS_SPACE.network_address)) // 256
    return block // len(NETWORK_ROLES)


def lab_indexes_on_host() -> set[int]:
    """Lab indexes whose blocks hold an address of the host (a bridge gateway of some lab)."""
    shown = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                           check=False)
    try:
        interfaces = json.loads(shown.stdout or "[]")
    except ValueError:
        return set()
    indexes = set()
    for interface in interfaces:
        for info in interface.get("addr_info", []):
            index = lab_index_of(IPv4Address(info["local"]))
            if index is not None:
                indexes.add(index)
    return indexes
