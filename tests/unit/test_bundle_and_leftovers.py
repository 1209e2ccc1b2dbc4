"""Engine-free parts of failure bundles (reading the collection script's output, naming), of
finding the work directories of dead runs, and of judging a standing lab's health."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness.cli.lab_status import problems
from harness.lab.cleanup import OWNER_FILE, make_workdir, orphaned_workdirs, remove_workdirs
from harness.lab.providers.base import owner_token
from harness.observe.bundle import (
    MAX_NAME,
    SECTION_MARK,
    _safe_relative,
    bundle_name,
    split_sections,
)


def test_the_scripts_output_splits_into_files():
    output = (f"noise before any section\n{SECTION_MARK} lb-1/haproxy.cfg\nglobal\n  daemon\n"
              f"\n{SECTION_MARK} ip-rule.txt\n0: from all lookup local\n"
              f"{SECTION_MARK} empty.txt\n")
    assert split_sections(output) == {
        "lb-1/haproxy.cfg": "global\n  daemon\n\n",
        "ip-rule.txt": "0: from all lookup local\n",
        "empty.txt": "",
    }


@pytest.mark.parametrize("name, expected", [
    ("lb-1/haproxy.cfg", "lb-1/haproxy.cfg"),
    ("../../etc/passwd", "etc/passwd"),
    ("/abs/olute", "abs/olute"),
    ("we ird$name", "we_ird_name"),
    ("..", "unnamed"),
])
def test_a_section_name_never_leaves_the_amphoras_directory(name: str, expected: str):
    assert _safe_relative(name).as_posix() == expected


def test_bundle_names_are_one_bounded_path_component():
    name = bundle_name("scenarios/smoke/test_smoke.py::test_x[a/b-1]")
    assert "/" not in name and name.startswith("scenarios_smoke_test_smoke.py_test_x")
    assert len(bundle_name("x" * 1000)) == MAX_NAME


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_work_dirs_of_dead_owners_are_found_and_others_are_left(tmp_dir: Path):
    live = make_workdir("1111aaaa")
    dead = make_workdir("2222bbbb")
    (dead / OWNER_FILE).write_text("999999999:1.00\n")  # no such process
    up = make_workdir("3333cccc")
    (up / OWNER_FILE).write_text("999999999:1.00\n")  # dead owner, but the lab is still up
    (tmp_dir / "amphora-harness-rootfs-xyz").mkdir()  # an image build's, not a lab's

    assert orphaned_workdirs(frozenset({"3333cccc"})) == [dead]
    assert orphaned_workdirs(frozenset({"3333cccc"}), everything=True) == [live, dead]
    assert (live / OWNER_FILE).read_text() == owner_token()

    remove_workdirs("2222bbbb")
    assert not dead.exists() and live.exists()


def test_a_lab_is_unhealthy_when_a_node_or_an_agent_is_down():
    status = {
        "amphorae": [
            {"index": 0, "running": True, "agent": {"answering": True}},
            {"index": 1, "running": True, "agent": {"answering": False,
                                                    "error": "ConnectTimeout"}},
            {"index": 2, "running": False, "agent": None},
        ],
        "members": [{"name": "m1", "running": True}, {"name": "m2", "running": False}],
    }
    assert problems(status) == [
        "the agent of amphora 1 does not answer (ConnectTimeout)",
        "amphora 2 is not running",
        "member m2 is not running",
    ]
    healthy = {"amphorae": [status["amphorae"][0]], "members": [status["members"][0]]}
    assert problems(healthy) == []
