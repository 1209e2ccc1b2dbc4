"""Validation of plug/vip and plug/network request bodies (Octavia's JSON field names).

Everything is checked before anything is touched, so a bad request changes nothing. JSON values
must be strings where addresses are expected: ipaddress would otherwise accept an integer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
MIN_MTU, MAX_MTU = 68, 65535


class PlugRequestError(ValueError):
    """A 400: message is the API's wording, details says what exactly is wrong."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(f"{message}: {details}")
        self.message = message
        self.details = details


@dataclass(frozen=True)
class HostRoute:
    destination: IPNetwork
    nexthop: IPAddress


@dataclass(frozen=True)
class SubnetAddress:
    """One address of the amphora on one subnet, with the routing that subnet asks for."""

    address: IPAddress
    subnet: IPNetwork
    gateway: IPAddress | None = None
    host_routes: tuple[HostRoute, ...] = ()


@dataclass(frozen=True)
class VipPlug:
    mac: str
    mtu: int | None
    vips: tuple[SubnetAddress, ...]  # the VIP first, then additional_vips
    vrrp_ip: IPAddress | None
    # More addresses on the VIP port (plug/network's vip_net_info case).
    fixed_ips: tuple[SubnetAddress, ...] = ()
    # An SR-IOV port (vnic_type direct): no security groups, the amphora filters (vip_firewall).
    is_sriov: bool = False


@dataclass(frozen=True)
class NetworkPlug:
    mac: str
    mtu: int | None
    fixed_ips: tuple[SubnetAddress, ...]
    # Set when the driver re-plugs the VRRP port itself with a new subnet (vip_net_info).
    vip: VipPlug | None = None
    is_sriov: bool = False


def _parsed(value: Any, what: str, parse: Callable[[str], T]) -> T:
    """value (a JSON field) parsed, or a ValueError that names the field."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def _address(value: Any, what: str) -> IPAddress:
    return _parsed(value, what, ipaddress.ip_address)


def _network(value: Any, what: str) -> IPNetwork:
    return _parsed(value, what, ipaddress.ip_network)


def _host_routes(value: Any) -> tuple[HostRoute, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("host_routes must be a list")
    routes = []
    for item in value:
        if not isinstance(item, dict):
            raise ValueError("each host route must be an object with destination and nexthop")
        routes.append(HostRoute(destination=_network(item.get("destination"), "destination"),
                                nexthop=_address(item.get("nexthop"), "nexthop")))
    return tuple(routes)


def _subnet_address(address: Any, subnet_cidr: Any, gateway: Any, host_routes: Any,
                    what: str) -> SubnetAddress:
    ip = _address(address, what)
    subnet = _network(subnet_cidr, "subnet_cidr")
    if ip.version != subnet.version or ip not in subnet:
        raise ValueError(f"{what} {ip} is not in subnet {subnet}")
    gw = None if gateway in (None, "") else _address(gateway, "gateway")
    if gw is not None and gw.version != ip.version:
        raise ValueError(f"gateway {gw} is not an IPv{ip.version} address")
    return SubnetAddress(ip, subnet, gw, _host_routes(host_routes))


def _mac(body: dict[str, Any], message: str) -> str:
    mac = body.get("mac_address")
    if not isinstance(mac, str) or not MAC_RE.match(mac):
        raise PlugRequestError(message, f"mac_address {mac!r} is not a MAC address")
    return mac.lower()


def _mtu(body: dict[str, Any], message: str) -> int | None:
    mtu = body.get("mtu")
    if mtu is None:
        return None
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
        raise PlugRequestError(message, f"mtu {mtu!r} is not an integer in {MIN_MTU}..{MAX_MTU}")
    return mtu


def _is_sriov(body: dict[str, Any], message: str) -> bool:
    value = body.get("is_sriov")
    if value is None:  # Octavia's driver sends null for a port it has not looked at
        return False
    if not isinstance(value, bool):
        raise PlugRequestError(message, f"is_sriov {value!r} is not true or false")
    return value


def parse_vip_request(vip: str, body: Any) -> VipPlug:
    """POST plug/vip/{vip}: Octavia's net_info (subnet_cidr, gateway, mac_address, ...)."""
    if not isinstance(body, dict) or not {"subnet_cidr", "gateway", "mac_address"} <= body.keys():
        raise PlugRequestError("Invalid subnet information",
                               "a JSON object with subnet_cidr, gateway and mac_address is needed")
    mac = _mac(body, "Invalid subnet information")
    mtu = _mtu(body, "Invalid subnet information")
    is_sriov = _is_sriov(body, "Invalid subnet information")
    extra = body.get("additional_vips") or []
    try:
        if not isinstance(extra, list) or not all(isinstance(v, dict) for v in extra):
            raise ValueError("additional_vips must be a list of objects")
        vips = [_subnet_address(vip, body["subnet_cidr"], body["gateway"],
                                body.get("host_routes"), "VIP")]
        vips += [_subnet_address(v.get("ip_address"), v.get("subnet_cidr"), v.get("gateway"),
                                 v.get("host_routes"), "additional VIP") for v in extra]
    except ValueError as exc:
        raise PlugRequestError("Invalid VIP", str(exc)) from exc
    vrrp_ip = None
    if body.get("vrrp_ip") not in (None, ""):
        try:
            vrrp_ip = _subnet_address(body["vrrp_ip"], body["subnet_cidr"], None, None,
                                      "vrrp_ip").address
        except ValueError as exc:
            raise PlugRequestError("Invalid VRRP Address", str(exc)) from exc
    return VipPlug(mac=mac, mtu=mtu, vips=tuple(vips), vrrp_ip=vrrp_ip, is_sriov=is_sriov)


def _fixed_ips(value: Any) -> tuple[SubnetAddress, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("fixed_ips must be a list of objects")
    # A member port's gateway is deliberately not used: the default route belongs to the VIP.
    return tuple(_subnet_address(item.get("ip_address"), item.get("subnet_cidr"), None,
                                 item.get("host_routes"), "ip_address") for item in value)


def parse_network_request(body: Any) -> NetworkPlug:
    """POST plug/network: Octavia's port_info (mac_address, fixed_ips, mtu, vip_net_info)."""
    if not isinstance(body, dict) or "mac_address" not in body:
        raise PlugRequestError("Invalid port information",
                               "a JSON object with mac_address is needed")
    mac = _mac(body, "Invalid port information")
    mtu = _mtu(body, "Invalid port information")
    is_sriov = _is_sriov(body, "Invalid port information")
    try:
        fixed_ips = _fixed_ips(body.get("fixed_ips"))
    except ValueError as exc:
        raise PlugRequestError("Invalid network port", str(exc)) from exc
    vip = None
    vip_net_info = body.get("vip_net_info")
    if vip_net_info is not None:
        if not isinstance(vip_net_info, dict) or not isinstance(vip_net_info.get("vip"), str):
            raise PlugRequestError("Invalid port information",
                                   "vip_net_info must be an object with vip")
        plugged = parse_vip_request(vip_net_info["vip"], {**vip_net_info, "mac_address": mac})
        vip = VipPlug(mac=mac, mtu=mtu, vips=plugged.vips, vrrp_ip=plugged.vrrp_ip,
                      fixed_ips=fixed_ips, is_sriov=is_sriov)
    return NetworkPlug(mac=mac, mtu=mtu, fixed_ips=fixed_ips, vip=vip, is_sriov=is_sriov)
