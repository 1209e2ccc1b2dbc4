"""Nothing of a lab is left behind: after down(), after Ctrl-C or SIGTERM of the process that
owns it, and (through gc) after that process was killed outright."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.lab.cleanup import collect_leftovers
from harness.lab.lab import Lab
from harness.lab.providers.base import Provider

EXIT_TIMEOUT_S = 60
# A process that brings up a lab with one member, prints the lab id and waits to be signalled.
# argv: the provider, and the Docker Engine's URL ("" for the environment's).
OWNER_SCRIPT = """
import sys, time
from harness.lab.lab import Lab
from harness.lab.providers import make_provider
lab = Lab(make_provider(sys.argv[1], docker_host=sys.argv[2] or None)).up()
lab.add_members(1)
print(lab.id, flush=True)
time.sleep(300)
"""


def default_signal_dispositions() -> None:
    """In the owner before exec: a shell running the suite as a background job ignores SIGINT,
    and a child would inherit that (Python leaves an ignored SIGINT ignored). The owner stands
    for a process started from a terminal."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def lab_ids(provider: Provider) -> set[str]:
    return {lab.lab_id for lab in provider.labs()}


def test_down_removes_every_node_and_network(lab_factory: Callable[[], Lab],
                                             lab_provider: Provider) -> None:
    lab = lab_factory()
    amphora = lab.add_amphora()
    lab.add_members(1)
    lab.add_client()
    lab.plug_vip(amphora)
    assert lab.id in lab_ids(lab_provider)

    lab.down()

    assert lab.id not in lab_ids(lab_provider)
    assert not lab.workdir.exists()


@pytest.fixture
def owner_process(request: pytest.FixtureRequest, lab_provider: Provider,
                  docker_host: str | None):
    """Start OWNER_SCRIPT; yields (process, lab id). Whatever the test leaves is removed, also
    when the session is cancelled while the owner is still bringing its lab up: its id is then
    unknown here (the owner had not printed it) and a SIGTERM that came before the owner
    registered its lab for teardown leaves the lab behind, so once the owner is gone the labs of
    dead owners are collected, as gc would."""
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, request.config.getoption("--provider"),
         docker_host or ""],
        stdout=subprocess.PIPE, text=True, preexec_fn=default_signal_dispositions,
    )
    lab_id = ""
    try:
        lab_id = process.stdout.readline().strip()
        yield process, lab_id
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(EXIT_TIMEOUT_S)
        collect_leftovers(lab_provider, include_kept=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signalled_owner_tears_its_lab_down(owner_process, lab_provider: Provider,
                                              signum: int) -> None:
    process, lab_id = owner_process
    assert lab_id in lab_ids(lab_provider)

    process.send_signal(signum)
    process.wait(EXIT_TIMEOUT_S)

    assert lab_id not in lab_ids(lab_provider)


def test_gc_collects_the_lab_of_a_killed_owner(owner_process, lab_provider: Provider) -> None:
    process, lab_id = owner_process
    process.kill()
    process.wait(EXIT_TIMEOUT_S)
    assert lab_id in lab_ids(lab_provider), "SIGKILL leaves the lab; gc must find it"

    assert lab_id in collect_leftovers(lab_provider, include_kept=False)

    assert lab_id not in lab_ids(lab_provider)
    assert not list(Path(tempfile.gettempdir()).glob(f"amphora-harness-{lab_id}-*"))
