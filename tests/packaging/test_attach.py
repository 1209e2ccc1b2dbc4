"""The reuse loop: `amphora-harness up`, then scenarios against that lab with `pytest --lab ID`,
twice (the second run finds the lab as the first one left it), and the lab is still up and
healthy afterwards (`status --json`, whose exit code turns 1 while an amphora is stopped);
`down` then leaves nothing, no private key in /tmp either. A lab of Octavia's agent
(`up --agent octavia`) stays one for the commands and labs that attach to it later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness.lab.attach import AttachedLab
from harness.lab.providers.base import Provider
from harness.lab.standing_state import STATE_DIR_ENV, load_record
from harness.observe.vip import MEMBER_HEADER
from harness.paths import SCENARIOS_DIR
from tests.packaging.support import default_signal_dispositions, lab_ids, workdirs

pytestmark = pytest.mark.lab
COMMAND_TIMEOUT_S = 300


def command(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, preexec_fn=default_signal_dispositions)


def harness(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return command([sys.executable, "-m", "harness.cli.main", *args], cwd, env)


def test_scenarios_run_against_a_lab_from_up_which_stays_up(
        tmp_path: Path, lab_provider: Provider, request: pytest.FixtureRequest) -> None:
    provider = request.config.getoption("--provider")
    state = tmp_path / "state"
    env = os.environ | {STATE_DIR_ENV: str(state)}
    up = harness("up", "empty", f"--provider={provider}", cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    [lab_id] = [p.name for p in state.iterdir()]
    try:
        assert not workdirs(lab_id), "up keeps the lab's keys in its state dir only"
        for attempt in range(2):
            run = command([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--lab={lab_id}", str(SCENARIOS_DIR / "smoke" / "test_smoke.py")],
                          tmp_path, env)
            assert run.returncode == 0, f"run {attempt}:\n{run.stdout}\n{run.stderr}"
            assert "4 passed" in run.stdout

            status = harness("status", "--json", f"--lab={lab_id}", cwd=tmp_path, env=env)
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert report["lab"] == lab_id and report["healthy"], report
            # The load balancer the tests pushed is gone again: the lab is as it was lent.
            assert [a["agent"]["listeners"] for a in report["amphorae"]] == [[]]
            assert lab_id in lab_ids(lab_provider)

        # status is for scripts: a stopped amphora makes it exit 1, and its JSON says why.
        assert harness("fault", "stop", "0", f"--lab={lab_id}", cwd=tmp_path,
                       env=env).returncode == 0
        status = harness("status", "--json", f"--lab={lab_id}", cwd=tmp_path, env=env)
        assert status.returncode == 1
        assert json.loads(status.stdout)["problems"] == ["amphora 0 is not running"]
        assert "amphora 0 is not running" in status.stderr
        assert harness("heal", f"--lab={lab_id}", cwd=tmp_path, env=env).returncode == 0
        assert harness("status", f"--lab={lab_id}", cwd=tmp_path, env=env).returncode == 0
    finally:
        down = harness("down", f"--lab={lab_id}", cwd=tmp_path, env=env)
    assert down.returncode == 0, down.stderr
    assert lab_id not in lab_ids(lab_provider)
    assert not workdirs(lab_id)
    assert not (state / lab_id).exists()


def served_by(url: str) -> str:
    """The member that answered a request through the VIP."""
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return answer.headers[MEMBER_HEADER]


def test_a_lab_of_octavias_agent_from_up_stays_one(
        tmp_path: Path, lab_provider: Provider, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`up --agent octavia` (issue 13): the record says so, and what later commands and
    `pytest --lab` do with the lab is done as for Octavia's agent: a port attached to its spare
    amphora is reindexed (else Octavia's plug/network answers 500), a killed amphora is healed
    only once it serves again."""
    if request.config.getoption("--provider") != "docker":
        pytest.skip("Octavia's agent runs on the docker provider only")
    state = tmp_path / "state"
    env = os.environ | {STATE_DIR_ENV: str(state)}
    monkeypatch.setenv(STATE_DIR_ENV, str(state))
    up = harness("up", "--agent=octavia", "--provider=docker", "--amphorae=2", "--no-lb",
                 cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    [lab_id] = [p.name for p in state.iterdir()]
    try:
        push = harness("push", "http", f"--lab={lab_id}", cwd=tmp_path, env=env)
        assert push.returncode == 0, push.stderr
        status = harness("status", "--json", f"--lab={lab_id}", cwd=tmp_path, env=env)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["agent"] == "octavia" and report["octavia_source"]["kind"], report
        [url] = report["load_balancer"]["urls"]
        members = {m["id"] for m in report["members"]}
        assert {served_by(url) for _ in range(6)} == members

        record = load_record(lab_id)
        assert record.agent == "octavia"
        attached = AttachedLab(record, lab_provider)
        try:
            _, spare = attached.add_amphorae(2)
            assert spare.ports == []  # up plugs only the load balancer's amphora
            attached.plug_member_network(spare)  # Octavia's agent takes only a small index
        finally:
            attached.down()

        assert harness("fault", "kill", "0", f"--lab={lab_id}", cwd=tmp_path,
                       env=env).returncode == 0
        heal = harness("heal", f"--lab={lab_id}", cwd=tmp_path, env=env)
        assert heal.returncode == 0, heal.stderr
        assert served_by(url) in members  # healed means serving again
    finally:
        down = harness("down", f"--lab={lab_id}", cwd=tmp_path, env=env)
    assert down.returncode == 0, down.stderr
    assert lab_id not in lab_ids(lab_provider)
    assert not (state / lab_id).exists()
