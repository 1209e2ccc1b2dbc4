"""The plugin's driver markers, in a pytest run of its own on made-up tests: a scenario meant for
one driver is deselected under the other with its reason in the summary, a known bug of a driver
is a strict xfail under that driver only, and a marker without a reason is a usage error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MADE_UP_TESTS = '''
import pytest

@pytest.mark.driver_specific("harness", reason="our renderer only")
def test_ours():
    pass

@pytest.mark.driver_xfail("octavia", reason="Octavia's foo() forgets bar")
def test_known_bug():
    import os
    assert os.environ.get("DRIVER") != "octavia"

def test_both():
    pass
'''


def run_pytest(directory: Path, *options: str, env_driver: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rx",
         str(directory), *options],
        capture_output=True, text=True, timeout=120, cwd=directory, check=False,
        env={"PATH": "/usr/bin:/bin", "DRIVER": env_driver})


@pytest.fixture
def made_up(tmp_path: Path) -> Path:
    (tmp_path / "test_made_up.py").write_text(MADE_UP_TESTS)
    return tmp_path


def test_under_octavia_a_harness_scenario_is_deselected_saying_why(made_up):
    done = run_pytest(made_up, "--driver", "octavia", "--junitxml=report.xml",
                      env_driver="octavia")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 deselected, 1 xfailed" in done.stdout
    assert "deselected for --driver octavia" in done.stdout
    assert "test_made_up.py::test_ours: only for --driver harness: our renderer only" \
        in done.stdout
    assert "Octavia's foo() forgets bar" in done.stdout
    # The JUnit report has no word for it: a list beside it says (for `conformance`).
    assert json.loads((made_up / "report.deselected.json").read_text()) == {
        "test_made_up.py::test_ours": "our renderer only"}


def test_under_our_driver_everything_runs(made_up):
    done = run_pytest(made_up)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout and "deselected" not in done.stdout


def test_a_marker_without_a_reason_is_refused(made_up):
    (made_up / "test_no_reason.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.driver_specific("harness")
        def test_x():
            pass
    '''))
    done = run_pytest(made_up, "--driver", "octavia")
    assert done.returncode != 0
    assert "driver_specific needs a driver (harness or octavia) and a reason" in done.stderr
