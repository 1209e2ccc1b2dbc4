"""The netns provider's bookkeeping, without making anything on the host: link names, MACs,
address and interface allocation, the state file, where a node's files land."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from harness.lab.providers.base import ProviderError
from harness.lab.providers.netns_node import identity_files, init_command, prepare_node_dir
from harness.lab.providers.netns_state import (
    LINK_NAME_MAX,
    BridgeRecord,
    LabState,
    NodeRecord,
    PortRecord,
    StateStore,
    bridge_name,
    is_lab_link,
    link_prefix,
    mac_for,
    veth_name,
)


def lab_state(lab_id: str = "0123abcd") -> LabState:
    return LabState(lab_id=lab_id, owner="1:2.00", keep=False, index=4, bridges=[
        BridgeRecord(role="vip", name=bridge_name(lab_id, 1), subnet="198.18.13.0/24",
                     gateway="198.18.13.1", dynamic_range="198.18.13.128/25")])


def port(node: str, ifname: str, address: str, link: str = "ahx") -> PortRecord:
    return PortRecord(node=node, network="vip", link=link, ifname=ifname,
                      mac_address=mac_for(IPv4Address(address)), ip_address=address)


def test_link_names_fit_the_kernel_limit_and_name_their_lab() -> None:
    names = [bridge_name("0123abcd", 1), veth_name("0123abcd", 9999)]
    assert all(len(name) <= LINK_NAME_MAX for name in names)
    assert all(is_lab_link("0123abcd", name) for name in names)
    assert not any(is_lab_link("0123abce", name) for name in names)
    # Names of other things that share the "ah" start are not the lab's.
    assert not is_lab_link("0123abcd", f"{link_prefix('0123abcd')}x1")
    assert not is_lab_link("0123abcd", f"{link_prefix('0123abcd')}v1x")


def test_a_lab_that_runs_out_of_link_names_says_so() -> None:
    with pytest.raises(ProviderError, match="out of link names"):
        veth_name("0123abcd", 100000)


def test_macs_are_local_unicast_and_follow_the_address() -> None:
    mac = mac_for(IPv4Address("198.18.13.129"))
    assert mac == "02:61:c6:12:0d:81"
    first_byte = int(mac[:2], 16)
    assert first_byte & 0b10 and not first_byte & 0b1  # locally administered, unicast
    assert mac_for(IPv4Address("198.18.13.130")) != mac


def test_addresses_come_from_the_dynamic_range_and_are_not_handed_out_twice() -> None:
    state = lab_state()
    assert state.allocate_address("vip") == IPv4Address("198.18.13.129")
    state.ports.append(port("n1", "eth1", "198.18.13.129"))
    assert state.allocate_address("vip") == IPv4Address("198.18.13.130")


def test_a_full_dynamic_range_is_an_error() -> None:
    state = lab_state()
    state.ports = [port("n1", f"eth{n}", f"198.18.13.{n}") for n in range(129, 255)]
    with pytest.raises(ProviderError, match="no free address"):
        state.allocate_address("vip")


def test_interfaces_are_numbered_after_the_nodes_highest() -> None:
    state = lab_state()
    assert state.next_ifname("n1") == "eth0"
    state.ports += [port("n1", "eth0", "198.18.13.2"), port("n1", "eth3", "198.18.13.129"),
                    port("n2", "eth7", "198.18.13.130")]
    assert state.next_ifname("n1") == "eth4"


def test_port_lookup_by_mac_ignores_case_and_other_nodes() -> None:
    state = lab_state()
    mine = port("n1", "eth1", "198.18.13.129")
    state.ports += [mine, port("n2", "eth1", "198.18.13.130")]
    assert state.port_by_mac("n1", mine.mac_address.upper()) is mine
    with pytest.raises(ProviderError, match="no interface"):
        state.port_by_mac("n1", mac_for(IPv4Address("198.18.13.130")))


def test_state_round_trips_through_the_store(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = lab_state()
    state.nodes.append(NodeRecord(name="amphora-harness-0123abcd-member-0", role="member",
                                  hostname="m", argv=["python3", "member_server.py"]))
    state.ports.append(port("amphora-harness-0123abcd-member-0", "eth0", "198.18.13.2"))
    with store.locked():
        store.save(state)

    assert store.lab_ids() == ["0123abcd"]
    assert store.get("0123abcd") == state
    with store.update("0123abcd") as changed:
        changed.next_link()
    assert store.get("0123abcd").links_made == state.links_made + 1
    assert store.load("ffffffff") is None


def test_a_failed_update_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.locked():
        store.save(lab_state())
    with pytest.raises(RuntimeError), store.update("0123abcd") as state:
        state.keep = True
        raise RuntimeError("interrupted")
    assert store.get("0123abcd").keep is False


def test_an_unreadable_record_is_reported(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    (tmp_path / "0123abcd").mkdir()
    (tmp_path / "0123abcd" / "state.json").write_text(json.dumps({"lab_id": "0123abcd"}))
    with pytest.raises(ProviderError, match="unreadable"):
        store.get("0123abcd")


def test_node_files_land_in_its_own_etc_and_var_lib(tmp_path: Path) -> None:
    prepare_node_dir(tmp_path, {"/etc/octavia/amphora-agent.conf": b"[amphora_agent]\n",
                                "/var/lib/octavia/x": b"x"})
    assert (tmp_path / "etc" / "octavia" / "amphora-agent.conf").read_bytes() == \
        b"[amphora_agent]\n"
    assert (tmp_path / "etc" / "octavia" / "amphora-agent.conf").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var-lib" / "octavia" / "x").read_bytes() == b"x"
    assert (tmp_path / "etc.work").is_dir() and (tmp_path / "var-lib.work").is_dir()


def test_node_files_elsewhere_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="/opt/x"):
        prepare_node_dir(tmp_path, {"/opt/x": b"x"})
    with pytest.raises(ProviderError):
        prepare_node_dir(tmp_path, {"/etcetera/x": b"x"})


def test_a_node_resolves_its_own_host_name() -> None:
    files = identity_files("amphora-1234", "198.18.12.2")
    assert "198.18.12.2\tamphora-1234\n" in files["/etc/hosts"].decode()
    assert files["/etc/hostname"] == b"amphora-1234\n"


def test_the_init_runs_the_program_under_tini_in_new_namespaces(tmp_path: Path) -> None:
    command = init_command(Path("/run/netns/n1"), tmp_path, "n1-host", ["python3", "-V"])
    assert command[:3] == ["nsenter", "--net=/run/netns/n1", "--"]
    assert {"--mount", "--pid", "--fork", "--mount-proc", "--uts", "--ipc"} <= set(command)
    assert command[-4:] == ["tini", "--", "python3", "-V"]
    assert command[command.index("node-setup") + 1:][:2] == [str(tmp_path), "n1-host"]
