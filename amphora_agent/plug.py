"""Plugging hot-plugged ports into the data plane.

A cloud hot-plugs a port into the amphora's default namespace; the driver then names it by MAC.
The agent moves it into the data-plane namespace, renames it (eth1 for the VIP, eth2.. for member
networks, as Octavia's amphorae do), and configures MTU, addresses, routes and policy rules.

What the agent configured on each interface is remembered in plugged_interfaces.json, so a
re-plug of the same port is idempotent: it applies the new plan and removes only what an earlier
plug added and the new one no longer wants. Addresses and routes keepalived owns (the VIP of an
active/standby pair, its table-1 routes and rules) are never in a plan, so never touched.

The same record brings the ports back after the amphora rebooted: the data-plane namespace was
gone and the cloud's ports re-appeared in the default namespace with their MACs (as on a VM,
where Octavia's amphora re-creates them from its interface files). replug() plugs each one again
under its old name with its old plan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amphora_agent import iproute
from amphora_agent.config import AgentConfig
from amphora_agent.fsutil import atomic_write
from amphora_agent.netns import ensure_namespace, namespace_exists
from amphora_agent.plug_request import NetworkPlug, SubnetAddress, VipPlug

LOG = logging.getLogger(__name__)

PLUG_STATE_FILE = "plugged_interfaces.json"
VIP_INTERFACE = "eth1"
FIRST_MEMBER_INTERFACE_INDEX = 2
# Replies from a VIP are routed by this table (same number as Octavia's keepalived template).
VIP_ROUTE_TABLE = "1"
VIP_RULE_PRIORITY = "100"
ACTIVE_STANDBY = "ACTIVE_STANDBY"


class InterfaceNotFound(LookupError):
    """No interface with the requested MAC (yet): the driver retries on the 404 this becomes."""


class PlugError(RuntimeError):
    """ip failed while plugging; the agent answers 500 with this text as details."""


@dataclass
class InterfacePlan:
    """What one plugged interface carries. Items are `ip` arguments after the family flag."""

    mtu: int | None = None
    addresses: list[list[str]] = field(default_factory=list)  # [family, "addr/len"]
    routes: list[list[str]] = field(default_factory=list)  # [family, route spec...]
    rules: list[list[str]] = field(default_factory=list)  # [family, rule spec...]


def _family(version: int) -> str:
    return "-6" if version == 6 else "-4"


def _host_prefix(entry: SubnetAddress) -> str:
    return f"{entry.address}/{entry.address.max_prefixlen}"


def _main_table_routes(entry: SubnetAddress, ifname: str, default_route: bool) -> list[list[str]]:
    fam = _family(entry.address.version)
    routes = [[fam, str(entry.subnet), "dev", ifname, "scope", "link"]]
    if default_route and entry.gateway is not None:
        routes.append([fam, "default", "via", str(entry.gateway), "dev", ifname, "onlink"])
    routes += [[fam, str(r.destination), "via", str(r.nexthop), "dev", ifname, "onlink"]
               for r in entry.host_routes]
    return routes


def _vip_table_routes(vip: SubnetAddress, ifname: str) -> list[list[str]]:
    """Table VIP_ROUTE_TABLE: where replies sourced from the VIP go (single topology only)."""
    fam = _family(vip.address.version)
    table = ["table", VIP_ROUTE_TABLE]
    routes = [[fam, str(vip.subnet), "dev", ifname, "src", str(vip.address), "scope", "link",
               *table]]
    if vip.gateway is not None:
        routes.append([fam, "default", "via", str(vip.gateway), "dev", ifname, "onlink", *table])
    routes += [[fam, str(r.destination), "via", str(r.nexthop), "dev", ifname, "onlink", *table]
               for r in vip.host_routes]
    return routes


def vip_plan(plug: VipPlug, ifname: str, topology: str) -> InterfacePlan:
    """The VIP port: own address, the VIP itself unless keepalived owns it, routes, rules."""
    plan = InterfacePlan(mtu=plug.mtu)
    keepalived_owns_vip = topology == ACTIVE_STANDBY
    if plug.vrrp_ip is not None:
        prefix = plug.vips[0].subnet.prefixlen
        plan.addresses.append([_family(plug.vrrp_ip.version), f"{plug.vrrp_ip}/{prefix}"])
    for vip in plug.vips:
        plan.routes += _main_table_routes(vip, ifname, default_route=True)
        if keepalived_owns_vip:
            continue
        plan.addresses.append([_family(vip.address.version), _host_prefix(vip)])
        plan.routes += _vip_table_routes(vip, ifname)
        plan.rules.append([_family(vip.address.version), "from", _host_prefix(vip),
                           "table", VIP_ROUTE_TABLE, "priority", VIP_RULE_PRIORITY])
    for fixed in plug.fixed_ips:
        plan.addresses.append([_family(fixed.address.version),
                               f"{fixed.address}/{fixed.subnet.prefixlen}"])
        plan.routes += _main_table_routes(fixed, ifname, default_route=False)[1:]
    return plan


def network_plan(plug: NetworkPlug, ifname: str) -> InterfacePlan:
    """A member network port: its fixed IPs and host routes, no default route."""
    plan = InterfacePlan(mtu=plug.mtu)
    for fixed in plug.fixed_ips:
        plan.addresses.append([_family(fixed.address.version),
                               f"{fixed.address}/{fixed.subnet.prefixlen}"])
        plan.routes += _main_table_routes(fixed, ifname, default_route=False)[1:]
    return plan


class PlugState:
    """plugged_interfaces.json: MAC -> {"interface": name, "plan": InterfacePlan fields}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            LOG.warning("%s is unreadable; treating every port as newly plugged", self.path)
            return {}

    def save(self, mac: str, ifname: str, plan: InterfacePlan) -> None:
        state = self.load()
        state[mac] = {"interface": ifname, "plan": asdict(plan)}
        atomic_write(self.path, json.dumps(state, indent=1).encode(), mode=0o644)

    def plan_of(self, mac: str) -> InterfacePlan:
        entry = self.load().get(mac)
        return InterfacePlan(**entry["plan"]) if entry else InterfacePlan()


def _macs(links: list[dict]) -> set[str]:
    return {link.get("address", "").lower() for link in links}


@contextlib.contextmanager
def _reported_as_plug_error() -> Iterator[None]:
    try:
        yield
    except iproute.IPCommandError as exc:
        raise PlugError(str(exc)) from exc
    except subprocess.CalledProcessError as exc:
        raise PlugError(f"{' '.join(exc.cmd)}: "
                        f"{(exc.stderr or b'').decode(errors='replace').strip()}") from exc


class Plugger:
    """Moves ports into the data-plane namespace and configures them."""

    def __init__(self, namespace: str, state_file: Path) -> None:
        self.namespace = namespace
        self.state = PlugState(state_file)

    @classmethod
    def for_config(cls, config: AgentConfig) -> Plugger:
        return cls(config.network_namespace, config.base_path / PLUG_STATE_FILE)

    def plug_vip(self, plug: VipPlug, topology: str) -> str:
        with _reported_as_plug_error():
            ifname, _ = self._attach(plug.mac, preferred=VIP_INTERFACE)
            self._configure(plug.mac, ifname, vip_plan(plug, ifname, topology))
        return ifname

    def plug_network(self, plug: NetworkPlug, topology: str) -> tuple[str, bool]:
        """Returns the interface name and whether it had been plugged before."""
        with _reported_as_plug_error():
            ifname, existed = self._attach(plug.mac, preferred=None)
            if existed and plug.vip is not None:
                plan = vip_plan(plug.vip, ifname, topology)
            else:
                plan = network_plan(plug, ifname)
            self._configure(plug.mac, ifname, plan)
        return ifname, existed

    def ports_to_replug(self) -> list[str]:
        """MACs of plugged ports that are back in the default namespace (the amphora rebooted),
        in the order of their interface names (eth1, eth2, ..., eth10). Empty without a
        data-plane namespace: ports never leave the default one then."""
        if not self.namespace:
            return []
        here = _macs(iproute.links(""))
        plugged = _macs(iproute.links(self.namespace))  # the agent made it at start
        recorded = sorted(self.state.load().items(),
                          key=lambda item: (len(item[1]["interface"]), item[1]["interface"]))
        for mac, entry in recorded:
            if mac not in here | plugged:
                LOG.warning("port %s (%s) is attached no more: not plugged again", mac,
                            entry["interface"])
        return [mac for mac, _ in recorded if mac in here]

    def replug(self, mac: str) -> str:
        """Plug a recorded port again as it was last plugged: same name, same plan (the
        API's plug path, so it stays idempotent). Returns the interface name."""
        entry = self.state.load()[mac]
        with _reported_as_plug_error():
            ifname, _ = self._attach(mac, preferred=entry["interface"])
            self._configure(mac, ifname, InterfacePlan(**entry["plan"]))
        return ifname

    def interface_with_address(self, address: str) -> str | None:
        if self.namespace and not namespace_exists(self.namespace):
            return None  # nothing plugged yet
        return iproute.interface_with_address(self.namespace, address)

    def _attach(self, mac: str, preferred: str | None) -> tuple[str, bool]:
        """The port's name in the data-plane namespace (moving it there first unless it is
        there already) and whether it had been plugged before."""
        if not self.namespace:
            # Test mode without a namespace: ports stay where they are, under their own name.
            current = iproute.link_name_by_mac("", mac)
            if current is None:
                raise InterfaceNotFound(mac)
            return current, mac in self.state.load()
        ensure_namespace(self.namespace)
        plugged = iproute.link_name_by_mac(self.namespace, mac)
        if plugged is not None:
            return plugged, True
        current = iproute.link_name_by_mac("", mac)
        if current is None:
            raise InterfaceNotFound(mac)
        target = self._free_name(preferred)
        LOG.info("moving %s (%s) into namespace %s as %s", current, mac, self.namespace, target)
        # A link is renamed only while down; the move and the rename are one netlink request.
        iproute.ip("", "link", "set", "dev", current, "down")
        iproute.ip("", "link", "set", "dev", current, "netns", self.namespace, "name", target)
        return target, False

    def _free_name(self, preferred: str | None) -> str:
        taken = {link["ifname"] for link in iproute.links(self.namespace)}
        if preferred and preferred not in taken:
            return preferred
        index = FIRST_MEMBER_INTERFACE_INDEX
        while f"eth{index}" in taken:
            index += 1
        return f"eth{index}"

    def _configure(self, mac: str, ifname: str, plan: InterfacePlan) -> None:
        old = self.state.plan_of(mac)
        ns = self.namespace
        link = ["link", "set", "dev", ifname]
        if plan.mtu is not None:
            iproute.ip(ns, *link, "mtu", str(plan.mtu))
        iproute.ip(ns, *link, "up")
        self._remove_stale(ifname, old, plan)
        for fam, prefix in plan.addresses:
            # No duplicate address detection: haproxy must be able to use the address at once.
            extra = ["nodad"] if fam == "-6" else []
            iproute.ip(ns, fam, "addr", "replace", prefix, "dev", ifname, *extra)
        for fam, *spec in plan.routes:
            iproute.ip(ns, fam, "route", "replace", *spec)
        for fam, *spec in plan.rules:
            self._add_rule(fam, spec)
        self.state.save(mac, ifname, plan)

    def _remove_stale(self, ifname: str, old: InterfacePlan, new: InterfacePlan) -> None:
        """Undo what an earlier plug of this port added and this one no longer wants."""
        stale = (
            [[fam, "addr", "del", prefix, "dev", ifname]
             for fam, prefix in old.addresses if [fam, prefix] not in new.addresses]
            + [[fam, "route", "del", *spec] for fam, *spec in old.routes
               if [fam, *spec] not in new.routes]
            + [[fam, "rule", "del", *spec] for fam, *spec in old.rules
               if [fam, *spec] not in new.rules]
        )
        for args in stale:
            try:
                iproute.ip(self.namespace, *args)
            except iproute.IPCommandError as exc:
                LOG.info("stale item already gone: %s", exc)

    def _add_rule(self, fam: str, spec: list[str]) -> None:
        # There is no `ip rule replace`; adding a rule that exists fails with EEXIST.
        try:
            iproute.ip(self.namespace, fam, "rule", "add", *spec)
        except iproute.IPCommandError as exc:
            if "File exists" not in str(exc):
                raise
