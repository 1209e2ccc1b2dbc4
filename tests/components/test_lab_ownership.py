"""Lab ownership tokens: gc removes a lab only when the process that owns it is gone."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.lab.providers.base import owner_alive, owner_token


def test_a_running_process_owns_its_labs() -> None:
    assert owner_alive(owner_token())


def test_an_exited_process_owns_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owner_token(child.pid)
    child.wait()
    assert not owner_alive(token)


def test_a_reused_pid_does_not_count_as_the_owner() -> None:
    pid, _, started = owner_token().partition(":")
    assert int(pid) == os.getpid()
    assert not owner_alive(f"{pid}:{float(started) - 1000:.2f}")


def test_malformed_tokens_are_not_owners() -> None:
    for token in ("", "abc", "12", ":", "x:y"):
        assert not owner_alive(token)
