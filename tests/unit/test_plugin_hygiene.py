"""The plugin in a project of its own (no engine): its markers under --strict-markers and
-p no:cacheprovider, SIGTERM ending a session through teardown, and `run` passing signals on to
its child. Children get default signal dispositions: a shell that runs this suite as a
background job ignores SIGINT, and they must not inherit that."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.polling import poll_until

EXIT_TIMEOUT_S = 30

FOREIGN_TEST = '''
import pytest

@pytest.mark.lab
@pytest.mark.netns
@pytest.mark.smoke
@pytest.mark.failover
@pytest.mark.driver_specific("harness", reason="only ours")
def test_marked():
    pass

def test_plain():
    pass
'''

# A session whose first test sleeps (and announces it), with a module fixture that notes its
# teardown: SIGTERM must stop the sleep, run the teardown and skip the second test.
SLOW_SESSION = '''
import pathlib, time
import pytest

MARKS = pathlib.Path(__file__).with_name("marks")

@pytest.fixture(scope="module")
def resource():
    yield
    with MARKS.open("a") as marks:
        marks.write("teardown\\n")

def test_slow(resource):
    with MARKS.open("a") as marks:
        marks.write("started\\n")
    time.sleep(60)

def test_after(resource):
    with MARKS.open("a") as marks:
        marks.write("second test ran\\n")
'''


def default_signal_dispositions() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def foreign_project(tmp_path: Path, test_text: str) -> Path:
    """A project of its own: its own pytest configuration, outside this checkout."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    (project / "test_foreign.py").write_text(test_text)
    return project


def test_markers_are_registered_for_a_strict_foreign_project(tmp_path: Path):
    project = foreign_project(tmp_path, FOREIGN_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", "-q",
         "test_foreign.py"], cwd=project, capture_output=True, text=True,
        timeout=120, preexec_fn=default_signal_dispositions)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert not (project / ".pytest_cache").exists()


def test_sigterm_ends_a_session_through_its_teardown(tmp_path: Path):
    project = foreign_project(tmp_path, SLOW_SESSION)
    marks = project / "marks"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_foreign.py"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=default_signal_dispositions)
    try:
        assert poll_until(lambda: marks.is_file() and "started" in marks.read_text(), 60, 0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, output
    assert marks.read_text().splitlines() == ["started", "teardown"]
    assert "SIGTERM" in output


PARENT = '''
import sys
from pathlib import Path
from harness.cli.signals import run_forwarding_signals
child = run_forwarding_signals([sys.executable, "-c", sys.argv[1], sys.argv[2]], cwd=Path.cwd())
print(f"child exit {child.exit_code} signal {child.signal_name}", flush=True)
'''
CHILD = '''
import signal, sys, time
from pathlib import Path
marks = Path(sys.argv[1])
def stop(signum, _frame):
    marks.write_text(f"got {signal.Signals(signum).name}, cleaning up")
    time.sleep(1)  # a teardown that takes a moment: the parent must wait for it
    marks.write_text(marks.read_text() + "; done")
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
marks.write_text("running")
time.sleep(60)
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_run_passes_a_signal_on_to_its_child_and_waits_for_it(tmp_path: Path, signum: int):
    marks = tmp_path / "marks"
    child = CHILD.replace("signal.SIGTERM, stop", f"signal.{signum.name}, stop")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child, str(marks)], cwd=tmp_path,
        stdout=subprocess.PIPE, text=True, preexec_fn=default_signal_dispositions)
    try:
        assert poll_until(lambda: marks.is_file() and marks.read_text() == "running", 30, 0.05)
        parent.send_signal(signum)
        output, _ = parent.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert marks.read_text() == f"got {signum.name}, cleaning up; done"
    assert output.strip() == f"child exit 3 signal {signum.name}"


def test_run_child_dies_with_its_parent(tmp_path: Path):
    """A `run` killed outright (SIGKILL) leaves no pytest behind: the child gets SIGTERM."""
    marks = tmp_path / "marks"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(marks)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, preexec_fn=default_signal_dispositions)
    try:
        assert poll_until(lambda: marks.is_file() and marks.read_text() == "running", 30, 0.05)
        parent.kill()
        parent.wait(EXIT_TIMEOUT_S)
        assert poll_until(lambda: marks.read_text().endswith("done"), EXIT_TIMEOUT_S, 0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert marks.read_text() == "got SIGTERM, cleaning up; done"


def test_a_command_ends_on_sigterm_through_its_finally_blocks(tmp_path: Path):
    """What harness.cli.main wraps every command in."""
    script = textwrap.dedent('''
        import sys, time
        from harness.cli.signals import Terminated, sigterm_exits_through_finally
        try:
            with sigterm_exits_through_finally():
                try:
                    print("waiting", flush=True)
                    time.sleep(60)
                finally:
                    print("finally ran", flush=True)
        except Terminated as exc:
            print(f"terminated {exc.code}", flush=True)
            sys.exit(exc.code)
    ''')
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=default_signal_dispositions)
    try:
        assert process.stdout.readline().strip() == "waiting"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143
    assert output.splitlines() == ["finally ran", "terminated 143"]
