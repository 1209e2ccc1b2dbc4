"""A standing lab remembers which agent its amphorae run (issue 13): `up --agent octavia` writes
the agent and the Octavia source into the lab's record, the record reads back the same, and a lab
rebuilt from it (pytest --lab: harness.lab.attach) is told its agent as a fresh Lab is, so a port
it attaches to an Octavia amphora gets the image's reindex helper run, as Octavia's plugging
needs. Engine-free: the provider hands out ports and records what is run in the nodes."""

from __future__ import annotations

import json
import shutil
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from harness.lab.attach import AttachedLab
from harness.lab.errors import LabError
from harness.lab.octavia_agent import OCTAVIA_CONFIG_EXTRA, REINDEX_ARGV
from harness.lab.providers.base import AttachedPort, ExecResult, Network, Node
from harness.lab.providers.docker import DockerProvider
from harness.lab.standing_state import (
    STATE_DIR_ENV,
    StandingLabError,
    load_record,
    record_lab,
    recorded_provider,
)
from harness.octavia_source import OctaviaSource, SourceKind
from tests.unit.test_cli_topology import AMPHORA_IDS, LAB_ID, make_record

CHECKOUT = {"kind": "checkout", "location": "/src/octavia"}
NEW_PORT_MAC = "02:42:c6:12:11:85"


class EnginelessProvider(DockerProvider):
    """A docker provider with no engine behind it: a port attach hands out a port, and every
    command run in a node is recorded (and succeeds, printing nothing)."""

    def __init__(self) -> None:  # no engine client
        self.commands: list[tuple[str, list[str]]] = []
        self.detached: list[tuple[str, str]] = []

    def attach_port(self, node: Node, network: Network) -> AttachedPort:
        return AttachedPort(network, NEW_PORT_MAC, IPv4Address("198.18.17.133"))

    def detach_port(self, node: Node, network: Network) -> None:
        self.detached.append((node.name, network.spec.role))

    def exec(self, node: Node, argv: list[str]) -> ExecResult:
        self.commands.append((node.name, list(argv)))
        return ExecResult(0, "")


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def lab_record(tmp_path: Path, agent: str, source: dict[str, str] | None):
    """A recorded lab of that agent whose second amphora is a spare (no ports yet), with the
    agent settings a Lab of that agent boots its amphorae with."""
    record = make_record(tmp_path / "pki", agent=agent, octavia_source=source)
    if agent == "octavia":
        for amphora in record.amphorae:
            amphora.agent_settings["extra"] = OCTAVIA_CONFIG_EXTRA
    record.amphorae[1].ports = []
    record.save()
    return record


@pytest.mark.parametrize(("agent", "source"), [("ours", None), ("octavia", CHECKOUT)])
def test_the_record_keeps_the_agent_and_what_boots_its_amphorae(
        tmp_path: Path, agent: str, source: dict[str, str] | None) -> None:
    written = lab_record(tmp_path, agent, source)
    read = load_record(LAB_ID)
    assert read == written
    assert (read.agent, read.octavia_source) == (agent, source)
    options = read.lab_options()
    assert options["agent"] == agent
    assert options["octavia_source"] == (
        None if source is None else OctaviaSource(SourceKind.CHECKOUT, "/src/octavia"))
    assert options["amphora_image"] == written.amphorae[0].node.image
    assert options["member_image"] == written.members[0].node.image


def reindexes(provider: EnginelessProvider) -> list[tuple[str, list[str]]]:
    return [(node, argv) for node, argv in provider.commands
            if tuple(argv[:len(REINDEX_ARGV)]) == REINDEX_ARGV]


@pytest.mark.parametrize(("agent", "reindexed"), [("ours", False), ("octavia", True)])
def test_an_attached_lab_plugs_as_a_lab_of_its_agent_does(
        tmp_path: Path, agent: str, reindexed: bool) -> None:
    lab_record(tmp_path, agent, CHECKOUT if agent == "octavia" else None)
    provider = EnginelessProvider()
    attached = AttachedLab(load_record(LAB_ID), provider)
    try:
        assert attached.agent == agent
        # Both amphorae fit the defaults a Lab of this agent boots with (Octavia's extra
        # options included).
        first, spare = attached.add_amphorae(2)
        assert [first.id, spare.id] == AMPHORA_IDS
        assert attached.attach_port(first, "member") is first.ports[1]  # has one: reused
        assert reindexes(provider) == []

        port = attached.attach_port(spare, "member")
        assert port.mac_address == NEW_PORT_MAC and spare.ports == [port]
        assert reindexes(provider) == ([(spare.name, [*REINDEX_ARGV, NEW_PORT_MAC])]
                                       if reindexed else [])
    finally:
        attached.down()  # the port it attached is detached again
    assert provider.detached == [(spare.name, "member")]


def test_a_lab_recorded_again_keeps_its_agent(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What `up` writes comes from the Lab itself: a lab told its agent by a record writes
    the same agent and source back."""
    first = lab_record(tmp_path, "octavia", CHECKOUT)
    attached = AttachedLab(load_record(LAB_ID), EnginelessProvider())
    try:
        attached.add_amphorae(2)
        attached.add_members(1)
        monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "again"))
        again = record_lab(attached, provider_name="docker", topology=first.topology,
                           lb_amphorae=first.lb_amphorae, vip=IPv4Address(first.vip))
    finally:
        attached.down()
    assert (again.agent, again.octavia_source) == ("octavia", CHECKOUT)
    assert load_record(LAB_ID).lab_options() == first.lab_options()
    assert again.amphorae[0].agent_settings["extra"] == OCTAVIA_CONFIG_EXTRA


def test_an_attached_lab_lends_no_amphora_of_other_agent_settings(tmp_path: Path) -> None:
    lab_record(tmp_path, "octavia", CHECKOUT)
    attached = AttachedLab(load_record(LAB_ID), EnginelessProvider())
    try:
        with pytest.raises(LabError, match="has 0 more amphorae"):
            attached.add_amphorae(1, extra={"amphora_agent": {"other": "value"}})
    finally:
        attached.down()


def test_a_record_of_the_schema_before_the_agent_says_how_to_remove_its_lab(
        tmp_path: Path, state_dir: Path) -> None:
    record = lab_record(tmp_path, "ours", None)
    path = state_dir / LAB_ID / "state.json"
    old = json.loads(path.read_text())
    del old["agent"], old["octavia_source"]
    old["schema"] = 1
    path.write_text(json.dumps(old))
    with pytest.raises(StandingLabError, match=rf"schema 1;.*down --lab {LAB_ID}"):
        load_record(LAB_ID)
    # `down` still finds where the lab runs.
    assert recorded_provider(LAB_ID) == record.provider
    shutil.rmtree(state_dir / LAB_ID)
    assert recorded_provider(LAB_ID) is None
