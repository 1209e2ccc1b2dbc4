"""Routes: plug the VIP port and member-network ports; which interface carries an address;
the VIP firewall of SR-IOV ports."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

from flask import Response, jsonify

from amphora_agent.errors import APIError
from amphora_agent.ip_advertisement import advertise
from amphora_agent.plug import InterfaceNotFound, PlugError
from amphora_agent.plug_request import (
    PlugRequestError,
    parse_network_request,
    parse_vip_request,
)
from amphora_agent.services import AgentServices
from amphora_agent.validation import read_json_body
from amphora_agent.vip_firewall import FirewallError, RulesError, parse_rules

# The driver retries a 404 whose details contain exactly this sentence (hot-plug still in flight).
NO_INTERFACE = "No suitable network interface found"


def _accepted(details: str) -> Response:
    response = jsonify(message="OK", details=details)
    response.status_code = 202
    return response


def _body(agent: AgentServices) -> Any:
    # None when it is not JSON: a 400 from the parser it is handed to.
    return read_json_body(agent.config.max_request_body_bytes)


@contextlib.contextmanager
def _plugging(agent: AgentServices, mac: str, is_sriov: bool, error: str) -> Iterator[None]:
    """One plug at a time; the plugger's failures as the API's errors; once an SR-IOV port is
    plugged, its firewall closed (it bypasses the cloud's security groups: drop all until rules
    arrive)."""
    with agent.plug_lock:
        try:
            yield
            if is_sriov:
                agent.firewall.close_all()
        except InterfaceNotFound as exc:
            raise APIError(404, NO_INTERFACE, f"{NO_INTERFACE} with MAC address {mac}") from exc
        except (PlugError, FirewallError) as exc:
            raise APIError(500, error, str(exc)) from exc


def plug_vip(agent: AgentServices, vip: str) -> Response:
    try:
        plug = parse_vip_request(vip, _body(agent))
    except PlugRequestError as exc:
        raise APIError(400, exc.message, exc.details) from exc
    with _plugging(agent, plug.mac, plug.is_sriov, "Error plugging VIP"):
        ifname = agent.plugger.plug_vip(plug, agent.config.loadbalancer_topology)
    return _accepted(f"VIP {plug.vips[0].address} plugged on interface {ifname}")


def plug_network(agent: AgentServices) -> Response:
    try:
        plug = parse_network_request(_body(agent))
    except PlugRequestError as exc:
        raise APIError(400, exc.message, exc.details) from exc
    with _plugging(agent, plug.mac, plug.is_sriov, "Error plugging network"):
        ifname, existed = agent.plugger.plug_network(plug, agent.config.loadbalancer_topology)
    # As Octavia's agent: the port's addresses are announced (whatever the topology).
    advertise(agent.config.network_namespace, [str(entry.address) for entry in plug.fixed_ips])
    if existed:
        return _accepted(f"Updated existing interface {ifname}")
    return _accepted(f"Plugged on interface {ifname}")


def _interface_with(agent: AgentServices, address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise APIError(400, "Invalid IP address", str(exc)) from exc
    ifname = agent.plugger.interface_with_address(address)
    if ifname is None:
        raise APIError(404, "Error interface not found for IP address",
                       f"no interface in the data plane carries {address}")
    return ifname


def get_interface(agent: AgentServices, address: str) -> Response:
    return jsonify(message="OK", interface=_interface_with(agent, address))


def set_interface_rules(agent: AgentServices, address: str) -> Response:
    """Open the VIP firewall for what the listeners need; everything else stays dropped.

    Unlike Octavia's agent, an empty list is applied too (it closes every port): a load
    balancer whose last listener went away should not keep the old ports open.
    """
    ifname = _interface_with(agent, address)
    try:
        rules = parse_rules(_body(agent))
    except RulesError as exc:
        raise APIError(400, "Invalid rules information", str(exc)) from exc
    with agent.plug_lock:
        try:
            agent.firewall.allow(ifname, rules)
        except FirewallError as exc:
            raise APIError(500, "Error setting interface rules", str(exc)) from exc
    return jsonify(message="OK")
