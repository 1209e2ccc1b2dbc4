"""Lab addressing: labs side by side never overlap, and VIPs stay out of the engine's range.
No container engine needed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from ipaddress import IPv4Address, IPv4Network

import pytest

from harness.lab.addressing import (
    LAB_ADDRESS_SPACE,
    MAX_LABS,
    NETWORK_ROLES,
    lab_index_of,
    subnet_plan,
)
from harness.lab.errors import LabError


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


def test_every_lab_address_maps_back_to_its_lab_index():
    for index in (0, 1, 57, MAX_LABS - 1):
        for role in NETWORK_ROLES:
            plan = subnet_plan(index, role)
            assert {lab_index_of(plan.gateway), lab_index_of(plan.subnet[-1])} == {index}
    assert lab_index_of(IPv4Address("10.0.0.1")) is None


@pytest.mark.netns
def test_blocks_held_by_host_addresses_count_as_used(tmp_path):
    """Labs of another provider show as the host's bridge addresses; seen from a namespace
    holding one such address (and one outside the lab space)."""
    namespace = f"amphora-harness-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for address in (f"{subnet_plan(5, 'vip').gateway}/24", "10.1.2.3/24"):
            subprocess.run(["ip", "-n", namespace, "addr", "add", address, "dev", "lo"],
                           check=True)
        shown = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c",
             "from harness.lab.addressing import lab_indexes_on_host; "
             "print(sorted(lab_indexes_on_host()))"],
            capture_output=True, text=True, check=True)
        assert shown.stdout.strip() == "[5]"
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
