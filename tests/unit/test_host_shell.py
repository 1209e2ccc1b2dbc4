"""Where a lab's host-side commands run (harness.lab.host_shell): link faults and their tables
go through whichever shell the lab's provider gives, the same commands either way; on an engine
elsewhere that shell is the lab's fault node, booted through the engine's API on first use.
No engine here: the shells and the engine's API are stand-ins that record what they are asked."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import docker.errors
import pytest

from harness.faults.base import FaultError
from harness.faults.link import BridgeRules, partition_rules
from harness.lab.host_shell import THIS_HOST, LocalShell
from harness.lab.host_tables import remove_lab_tables
from harness.lab.providers import docker as docker_provider
from harness.lab.providers.base import INDEX_LABEL, LAB_LABEL, OWNER_LABEL, ROLE_LABEL
from harness.lab.providers.fault_node import ENTRYPOINT, FaultNode, fault_node_name


class RecordingShell:
    """Answers nft with canned output, and remembers every argv."""

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.ran: list[list[str]] = []
        self.answers = answers or {}

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.ran.append(argv)
        code, out, err = next((a for key, a in self.answers.items() if key in " ".join(argv)),
                              (0, "", ""))
        return subprocess.CompletedProcess(argv, code, out, err)


def test_link_fault_rules_run_as_one_nft_script_through_the_shell_given():
    counters = {"nftables": [{"rule": {"expr": [{"counter": {"packets": 4}}]}},
                             {"rule": {"expr": [{"counter": {"packets": 3}}]}}]}
    shell = RecordingShell({"-j list": (0, json.dumps(counters), "")})
    fault = BridgeRules("0123abcd", "partition", partition_rules("02:00:00:00:00:01",
                                                                 "02:00:00:00:00:02"), shell)
    fault.apply()
    assert shell.ran[0] == ["nft", fault.script()]  # the script is one argument: no stdin
    assert fault.table in fault.script()
    assert fault.dropped() == 7
    fault.heal()
    assert shell.ran[-1] == ["nft", "delete", "table", "bridge", fault.table]


def test_a_table_already_gone_heals_and_an_nft_failure_says_why():
    gone = RecordingShell({"delete": (1, "", "Error: No such file or directory")})
    BridgeRules("0123abcd", "x", {}, gone).heal()
    refused = RecordingShell({"nft table": (1, "", "Error: Operation not permitted")})
    with pytest.raises(FaultError, match="not permitted"):
        BridgeRules("0123abcd", "x", {"forward": ["drop"]}, refused).apply()


def test_lab_tables_are_removed_through_the_shell_given():
    listing = ("table bridge amphora_harness_0123abcd_1\ntable bridge amphora_harness_4567cdef_2"
               "\ntable bridge somebody_else\n")
    shell = RecordingShell({"list tables": (0, listing, "")})
    assert remove_lab_tables("0123abcd", shell=shell) == ["amphora_harness_0123abcd_1"]
    assert shell.ran[-1] == ["nft", "delete", "table", "bridge", "amphora_harness_0123abcd_1"]


def test_a_local_shell_enters_the_namespace_it_names(monkeypatch):
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: seen.append(argv))
    LocalShell("bridges").run(["nft", "list", "tables"])
    THIS_HOST.run(["ip", "link"])
    assert seen == [["ip", "netns", "exec", "bridges", "nft", "list", "tables"], ["ip", "link"]]


class FakeEngineApi:
    """The few engine API calls a fault node makes, on containers kept in a dict."""

    def __init__(self) -> None:
        self.containers: dict[str, dict] = {}
        self.execs: list[list[str]] = []

    def inspect_container(self, name: str) -> dict:
        if name not in self.containers:
            raise docker.errors.NotFound(name)
        return self.containers[name]

    def create_host_config(self, **config) -> dict:
        return config

    def create_container(self, image: str, **fields) -> dict:
        self.containers[fields["name"]] = {"image": image, "running": False, **fields}
        return {"Id": fields["name"]}

    def start(self, name: str) -> None:
        self.containers[name]["running"] = True

    def exec_create(self, name: str, argv: list[str]) -> dict:
        container = self.inspect_container(name)
        if not container["running"]:
            raise docker.errors.APIError("not running", response=SimpleNamespace(status_code=409))
        self.execs.append(argv)
        return {"Id": str(len(self.execs))}

    def exec_start(self, _exec_id: str, demux: bool) -> tuple[bytes | None, bytes | None]:
        assert demux
        return b"listed\n", None

    def exec_inspect(self, _exec_id: str) -> dict:
        return {"ExitCode": 0}


def test_a_fault_node_is_booted_on_the_engines_host_network_at_its_first_command():
    api = FakeEngineApi()
    labels = {LAB_LABEL: "0123abcd", OWNER_LABEL: "me"}
    node = FaultNode(SimpleNamespace(api=api), "0123abcd", labels, lambda: "amphora:1")
    assert not node.exists()
    result = node.run(["nft", "list", "tables"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "listed\n", "")
    booted = api.containers[fault_node_name("0123abcd")]
    assert booted["image"] == "amphora:1"
    assert booted["entrypoint"] == ENTRYPOINT
    assert booted["host_config"] == {"network_mode": "host", "cap_add": ["NET_ADMIN"]}
    assert booted["labels"] == {**labels, ROLE_LABEL: "faults"}  # the lab's: teardown finds it
    booted["running"] = False  # the engine restarted: the node is there but stopped
    node.run(["ip", "link"])
    assert api.execs == [["nft", "list", "tables"], ["ip", "link"]]


class FakeNetwork:
    def __init__(self, network_id: str, lab_id: str) -> None:
        self.id = network_id
        self.attrs = {"Labels": {LAB_LABEL: lab_id, OWNER_LABEL: "me", INDEX_LABEL: "3"}}


@pytest.mark.parametrize("bridges_here", [True, False])
def test_the_docker_provider_runs_host_commands_here_only_for_labs_whose_bridges_are(
        monkeypatch, bridges_here):
    networks = [FakeNetwork("a" * 64, "0123abcd"), FakeNetwork("b" * 64, "0123abcd")]
    client = SimpleNamespace(ping=lambda: True, api=FakeEngineApi(),
                             networks=SimpleNamespace(list=lambda filters: networks))
    monkeypatch.setattr(docker_provider, "_bridge_here", lambda _network_id: bridges_here)
    provider = docker_provider.DockerProvider(client=client)
    shell = provider.host_shell("0123abcd")
    if bridges_here:
        assert shell is THIS_HOST
    else:
        assert isinstance(shell, FaultNode)
        assert shell.name == fault_node_name("0123abcd")
    assert provider.host_shell("0123abcd") is shell  # asked once per lab
