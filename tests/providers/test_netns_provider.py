"""The netns provider on this host, no container engine: members booted as namespaces, reached
over the lab's bridges, hot-plugged, killed, started, paused, torn down and collected."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from harness.lab.lab import Lab, LabMember
from harness.lab.providers.base import NodeSpec, ProviderError, owner_pid
from harness.lab.providers.netns import NetnsProvider
from harness.lab.providers.netns_state import StateStore, is_lab_link

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def provider() -> NetnsProvider:
    return NetnsProvider()


@pytest.fixture(scope="module")
def lab(provider: NetnsProvider) -> Iterator[Lab]:
    with Lab(provider) as lab:
        yield lab


@pytest.fixture(scope="module")
def member(lab: Lab) -> LabMember:
    return lab.add_members(1)[0]


def get(member: LabMember, timeout: float = 5.0) -> dict:
    with requests.Session() as session:
        session.trust_env = False
        return session.get(f"http://{member.address}:{member.port('http')}/",
                           timeout=timeout).json()


def run_in(lab: Lab, member: LabMember, command: str) -> str:
    result = lab.provider.exec(member.node, ["sh", "-c", command])
    assert result.ok, result.output
    return result.output.strip()


def host_links() -> dict[str, dict]:
    listing = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                             check=True).stdout
    return {link["ifname"]: link for link in json.loads(listing)}


def host_namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_a_member_answers_from_its_own_namespaces(lab: Lab, member: LabMember) -> None:
    assert get(member)["member"] == member.id
    assert run_in(lab, member, "hostname") == member.node.spec.hostname
    # Its own pid namespace, with tini as pid 1, and its own /run: no host namespace shows.
    assert run_in(lab, member, "cat /proc/1/comm") == "tini"
    assert run_in(lab, member, "ip netns list") == ""
    assert run_in(lab, member, "readlink /proc/1/ns/net") != \
        subprocess.run(["readlink", "/proc/self/ns/net"], capture_output=True, text=True,
                       check=True).stdout.strip()
    # The file the lab gave it is in its /etc, not in the host's.
    assert run_in(lab, member, "test -s /etc/member/tls.pem && echo yes") == "yes"
    assert not Path("/etc/member").exists()


def test_a_hot_plugged_port_appears_unconfigured_and_its_link_can_be_cut(
        lab: Lab, member: LabMember, provider: NetnsProvider) -> None:
    network = lab.networks["vip"]
    port = provider.attach_port(member.node, network)
    assert port.ip_address in network.spec.dynamic_range
    inside = json.loads(run_in(lab, member, "ip -j addr show"))
    plugged = next(link for link in inside if link["address"] == port.mac_address)
    assert plugged["addr_info"] == []  # the agent configures it, not the cloud
    with pytest.raises(ProviderError, match="already attached"):
        provider.attach_port(member.node, network)

    record = StateStore().get(lab.id).port_by_mac(member.name, port.mac_address)
    provider.disconnect(member.node, port.mac_address)
    assert "UP" not in host_links()[record.link]["flags"]
    provider.reconnect(member.node, port.mac_address)
    assert "UP" in host_links()[record.link]["flags"]

    provider.detach_port(member.node, network)
    inside = json.loads(run_in(lab, member, "ip -j link show"))
    assert port.mac_address not in {link["address"] for link in inside}
    assert record.link not in host_links()


def test_a_killed_member_is_down_until_started_again(lab: Lab, member: LabMember,
                                                     provider: NetnsProvider) -> None:
    provider.kill(member.node)
    assert not provider.is_running(member.node)
    with pytest.raises(requests.RequestException):
        get(member, timeout=1.0)
    with pytest.raises(ProviderError, match="not running"):
        provider.exec(member.node, ["true"])

    provider.start(member.node)
    assert provider.is_running(member.node)
    # Same address and MAC as before: the host reaches it again once its server is up.
    answered = None
    for _ in range(50):
        try:
            answered = get(member, timeout=1.0)
            break
        except requests.RequestException:
            time.sleep(0.1)
    assert answered is not None and answered["member"] == member.id


def test_a_paused_member_answers_only_once_unpaused(lab: Lab, member: LabMember,
                                                    provider: NetnsProvider) -> None:
    get(member)
    provider.pause(member.node)
    try:
        with pytest.raises(requests.Timeout):
            get(member, timeout=1.0)
    finally:
        provider.unpause(member.node)
    assert get(member)["member"] == member.id


def test_images_of_an_engine_are_refused(lab: Lab, provider: NetnsProvider) -> None:
    assert provider.ensure_image("amphora") == "netns:amphora"
    spec = NodeSpec(lab_id=lab.id, role="amphora", name=f"amphora-harness-{lab.id}-x",
                    hostname="x", image="amphora-harness/amphora:abc",
                    network=lab.networks["lb-mgmt"], address=lab.plan("lb-mgmt").node_address(90))
    with pytest.raises(ProviderError, match="docker provider"):
        provider.boot(spec)


def what_the_lab_has(provider: NetnsProvider, lab: Lab) -> dict[str, object]:
    state = StateStore().get(lab.id)
    return {
        "namespaces": {node.name for node in state.nodes},
        "links": {name for name in host_links() if is_lab_link(lab.id, name)},
        "inits": [owner_pid(node.init) for node in state.nodes if node.init],
    }


def assert_nothing_left(lab: Lab, before: dict[str, object]) -> None:
    assert lab.id not in StateStore().lab_ids()
    assert not before["namespaces"] & host_namespaces()
    assert not {name for name in host_links() if is_lab_link(lab.id, name)}
    assert not [pid for pid in before["inits"] if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                           check=False).stdout
    assert f"lab {lab.id}" not in rules


def test_teardown_leaves_nothing(provider: NetnsProvider) -> None:
    lab = Lab(provider).up()
    try:
        lab.add_members(1)
        before = what_the_lab_has(provider, lab)
        assert before["namespaces"] <= host_namespaces() and before["links"]
    finally:
        lab.down()
    assert_nothing_left(lab, before)


def test_gc_collects_a_lab_whose_owner_is_gone(provider: NetnsProvider) -> None:
    lab = Lab(provider).up()
    try:
        lab.add_members(1)
        before = what_the_lab_has(provider, lab)
        store = StateStore()
        with store.update(lab.id) as state:
            state.owner = "1:0.00"  # pid 1 did not start at the epoch: that owner is gone
        assert lab.id in provider.gc(include_kept=False)
    finally:
        lab.down()
    assert_nothing_left(lab, before)
