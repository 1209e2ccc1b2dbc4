"""Lab addressing: labs side by side never overlap, and VIPs stay out of the engine's range.
No container engine needed."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from harness.lab import LAB_ADDRESS_SPACE, MAX_LABS, NETWORK_ROLES, LabError, subnet_plan


def all_subnets() -> list[IPv4Network]:
    return [subnet_plan(i, role).subnet for i in range(MAX_LABS) for role in NETWORK_ROLES]


def test_every_lab_network_is_a_distinct_slash_24_in_the_benchmark_range() -> None:
    subnets = all_subnets()
    assert len(set(subnets)) == len(subnets) == MAX_LABS * 3
    for subnet in subnets:
        assert subnet.prefixlen == 24
        assert subnet.subnet_of(LAB_ADDRESS_SPACE)


def test_first_lab_layout() -> None:
    assert [str(subnet_plan(0, r).subnet) for r in NETWORK_ROLES] == [
        "198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24"]
    assert str(subnet_plan(1, "lb-mgmt").subnet) == "198.18.3.0/24"
    assert str(subnet_plan(MAX_LABS - 1, "member").subnet) == "198.19.253.0/24"


def test_lab_index_out_of_range_is_refused() -> None:
    for index in (-1, MAX_LABS):
        with pytest.raises(LabError):
            subnet_plan(index, "vip")


def test_vips_nodes_gateway_and_engine_range_do_not_overlap() -> None:
    plan = subnet_plan(7, "vip")
    vips = {plan.vip_address(n) for n in range(28)}
    nodes = {plan.node_address(n) for n in range(98)}
    engine = set(plan.dynamic_range.hosts())
    assert plan.gateway == plan.subnet[1]
    assert plan.dynamic_range.subnet_of(plan.subnet)
    assert not vips & nodes
    assert not (vips | nodes) & engine
    assert plan.gateway not in vips | nodes | engine


def test_address_pools_have_bounds() -> None:
    plan = subnet_plan(0, "vip")
    with pytest.raises(LabError, match="VIPs"):
        plan.vip_address(28)
    with pytest.raises(LabError, match="node addresses"):
        plan.node_address(98)
