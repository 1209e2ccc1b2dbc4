"""The reuse loop: `amphora-harness up`, then scenarios against that lab with `pytest --lab ID`,
twice (the second run finds the lab as the first one left it), and the lab is still up and
healthy afterwards (`status --json`, whose exit code turns 1 while an amphora is stopped);
`down` then leaves nothing, no private key in /tmp either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lab.providers.base import Provider
from harness.lab.standing_state import STATE_DIR_ENV
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
