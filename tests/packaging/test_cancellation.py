"""Cancelling as a CI system does: SIGTERM to a pytest session in the middle of the smoke suite,
and to `amphora-harness run` in the middle of its smoke suite. Each must end within 30 s,
through teardown, leaving nothing: no lab (containers, networks, namespaces), no work directory,
no process of its own."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psutil
import pytest

from harness.lab.providers.base import Provider
from harness.paths import SCENARIOS_DIR
from harness.polling import poll_until
from tests.packaging.support import lab_ids, start, stop, workdirs

pytestmark = pytest.mark.lab
END_TIMEOUT_S = 30
# The first smoke test passes within this on a slow runner; then the suite is mid-way.
FIRST_PASS_TIMEOUT_S = 240


def owned_labs(provider: Provider, pids: set[int]) -> set[str]:
    """The labs whose owner is one of these processes."""
    from harness.lab.providers import labs_on_host
    from harness.lab.providers.base import owner_pid

    return {lab.lab_id for lab in labs_on_host(provider) if owner_pid(lab.owner) in pids}


def tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("command", ["pytest", "amphora-harness run"])
def test_sigterm_mid_suite_ends_everything_within_30s(
        command: str, tmp_path: Path, lab_provider: Provider,
        request: pytest.FixtureRequest) -> None:
    provider_name = request.config.getoption("--provider")
    argv = {
        "pytest": [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
                   f"--provider={provider_name}", str(SCENARIOS_DIR / "smoke")],
        # run passes -q to its pytest: -vv makes that one line per test again.
        "amphora-harness run": [sys.executable, "-m", "harness.cli.main", "run", "smoke",
                                f"--provider={provider_name}", "--", "-vv"],
    }[command]
    log = tmp_path / "output.log"
    process = start(argv, cwd=tmp_path, log=log)
    seen_processes: dict[int, psutil.Process] = {}
    seen_labs: set[str] = set()

    def labs_up_now() -> set[str]:
        for member in tree(psutil.Process(process.pid)):
            seen_processes.setdefault(member.pid, member)
        labs = owned_labs(lab_provider, set(seen_processes))
        seen_labs.update(labs)
        return labs

    def mid_suite() -> bool:
        """A test has passed and a lab of the run is up (or the run is over)."""
        return process.poll() is not None or \
            ("PASSED" in log.read_text() and bool(labs_up_now()))

    try:
        assert poll_until(mid_suite, FIRST_PASS_TIMEOUT_S, 0.2), log.read_text()
        assert process.poll() is None, f"the suite ended before it was cancelled:\n" \
                                       f"{log.read_text()}"
        process.send_signal(signal.SIGTERM)
        process.wait(END_TIMEOUT_S)
    finally:
        stop(process)
    output = log.read_text()
    assert process.returncode == 128 + signal.SIGTERM, output
    alive = [p for p in seen_processes.values() if p.is_running() and
             p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
    assert not seen_labs & lab_ids(lab_provider), output
    for lab_id in seen_labs:
        assert not workdirs(lab_id), lab_id
