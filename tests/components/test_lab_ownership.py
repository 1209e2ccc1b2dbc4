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
    machine, _, process = owner_token().rpartition("/")
    pid, _, started = process.partition(":")
    assert int(pid) == os.getpid()
    assert not owner_alive(f"{machine}/{pid}:{float(started) - 1000:.2f}")


def test_an_owner_on_another_machine_is_left_alone_and_one_before_a_reboot_is_gone() -> None:
    """A shared engine holds labs of processes on other machines: gc here cannot see them."""
    host, boot_id, process = owner_token().split("/")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = owner_token(child.pid).rpartition("/")[2]
    child.wait()
    assert owner_alive(f"{host}-elsewhere/{boot_id}/{gone}")
    assert not owner_alive(f"{host}/{boot_id[::-1]}/{process}")
    assert not owner_alive(f"{host}/{boot_id}/{gone}")


def test_malformed_tokens_are_not_owners() -> None:
    for token in ("", "abc", "12", ":", "x:y"):
        assert not owner_alive(token)
