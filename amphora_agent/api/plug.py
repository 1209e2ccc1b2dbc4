"""Routes: plug the VIP port and member-network ports; which interface carries an address;
the VIP firewall of SR-IOV ports."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

from flask import Blueprint, jsonify, request

from amphora_agent.context import ctx
from amphora_agent.errors import APIError
from amphora_agent.plug import InterfaceNotFound, PlugError, Plugger
from amphora_agent.plug_request import (
    PlugRequestError,
    parse_network_request,
    parse_vip_request,
)
from amphora_agent.vip_firewall import FirewallError, RulesError, VipFirewall, parse_rules

blueprint = Blueprint("plug", __name__, url_prefix="/1.0")

# The driver retries a 404 whose details contain exactly this sentence (hot-plug still in flight).
NO_INTERFACE = "No suitable network interface found"


def _plugger() -> Plugger:
    return Plugger.for_config(ctx().config)


def _firewall() -> VipFirewall:
    return VipFirewall(ctx().config)


def _close_firewall(is_sriov: bool, error: str) -> None:
    """An SR-IOV port bypasses the cloud's security groups: drop all until rules arrive."""
    if not is_sriov:
        return
    try:
        _firewall().close_all()
    except FirewallError as exc:
        raise APIError(500, error, str(exc)) from exc


def _accepted(details: str):
    response = jsonify(message="OK", details=details)
    response.status_code = 202
    return response


def _body():
    # Lenient about the Content-Type like Octavia's agent; unparsable JSON is a 400 below.
    return request.get_json(force=True, silent=True)


@contextlib.contextmanager
def _plugging(mac: str, is_sriov: bool, error: str) -> Iterator[None]:
    """One plug at a time; the plugger's failures as the API's errors; once an SR-IOV port is
    plugged, its firewall closed."""
    with ctx().lock("plug"):
        try:
            yield
        except InterfaceNotFound as exc:
            raise APIError(404, NO_INTERFACE, f"{NO_INTERFACE} with MAC address {mac}") from exc
        except PlugError as exc:
            raise APIError(500, error, str(exc)) from exc
        _close_firewall(is_sriov, error)


@blueprint.post("/plug/vip/<vip>")
def plug_vip(vip: str):
    try:
        plug = parse_vip_request(vip, _body())
    except PlugRequestError as exc:
        raise APIError(400, exc.message, exc.details) from exc
    with _plugging(plug.mac, plug.is_sriov, "Error plugging VIP"):
        ifname = _plugger().plug_vip(plug, ctx().config.loadbalancer_topology)
    return _accepted(f"VIP {plug.vips[0].address} plugged on interface {ifname}")


@blueprint.post("/plug/network")
def plug_network():
    try:
        plug = parse_network_request(_body())
    except PlugRequestError as exc:
        raise APIError(400, exc.message, exc.details) from exc
    with _plugging(plug.mac, plug.is_sriov, "Error plugging network"):
        ifname, existed = _plugger().plug_network(plug, ctx().config.loadbalancer_topology)
    if existed:
        return _accepted(f"Updated existing interface {ifname}")
    return _accepted(f"Plugged on interface {ifname}")


def _interface_with(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise APIError(400, "Invalid IP address", str(exc)) from exc
    ifname = _plugger().interface_with_address(address)
    if ifname is None:
        raise APIError(404, "Error interface not found for IP address",
                       f"no interface in the data plane carries {address}")
    return ifname


@blueprint.get("/interface/<address>")
def get_interface(address: str):
    return jsonify(message="OK", interface=_interface_with(address))


@blueprint.put("/interface/<address>/rules")
def set_interface_rules(address: str):
    """Open the VIP firewall for what the listeners need; everything else stays dropped.

    Unlike Octavia's agent, an empty list is applied too (it closes every port): a load
    balancer whose last listener went away should not keep the old ports open.
    """
    ifname = _interface_with(address)
    try:
        rules = parse_rules(_body())
    except RulesError as exc:
        raise APIError(400, "Invalid rules information", str(exc)) from exc
    with ctx().lock("plug"):
        try:
            _firewall().allow(ifname, rules)
        except FirewallError as exc:
            raise APIError(500, "Error setting interface rules", str(exc)) from exc
    return jsonify(message="OK")
