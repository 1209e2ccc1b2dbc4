"""--timeout-factor: one number scales every lab wait, in this process and in the processes it
starts (through the environment); the command and the plugin refuse nonsense."""

from __future__ import annotations

import argparse
import math

import pytest

from harness import polling
from harness.cli.main import parse_args


class FakeClock:
    """time.monotonic and time.sleep for poll_until: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(polling.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(polling.time, "sleep", fake.sleep)
    return fake


@pytest.fixture(autouse=True)
def no_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    """No factor during the test, and whatever the test sets is undone (set first, so that
    monkeypatch restores the environment as it was)."""
    monkeypatch.setenv(polling.TIMEOUT_FACTOR_ENV, "1")
    monkeypatch.delenv(polling.TIMEOUT_FACTOR_ENV)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "fast", ""])
def test_a_factor_is_a_finite_positive_number(text: str):
    with pytest.raises(ValueError, match="timeout factor"):
        polling.parse_timeout_factor(text)


def test_without_a_factor_waits_are_as_written():
    assert polling.timeout_factor() == 1.0
    assert polling.scaled(30) == 30


def test_a_factor_set_here_reaches_child_processes_through_the_environment(
        monkeypatch: pytest.MonkeyPatch):
    polling.set_timeout_factor(2.5)
    assert polling.scaled(10) == 25
    assert float(polling.os.environ[polling.TIMEOUT_FACTOR_ENV]) == 2.5


def test_poll_until_waits_the_scaled_time(clock: FakeClock):
    started = clock.now
    assert not polling.poll_until(lambda: False, timeout=10, interval=1)
    assert math.isclose(clock.now - started, 10)

    polling.set_timeout_factor(3)
    started = clock.now
    assert not polling.poll_until(lambda: False, timeout=10, interval=1)
    assert math.isclose(clock.now - started, 30)


def test_wait_until_names_the_scaled_limit(clock: FakeClock):
    polling.set_timeout_factor(2)
    with pytest.raises(TimeoutError, match="the agent not within 20s"):
        polling.wait_until(lambda: False, 10, "the agent", interval=1)


def test_the_command_takes_the_factor_anywhere_and_refuses_nonsense(capsys):
    args = parse_args(["--timeout-factor", "4", "status"])
    assert args.timeout_factor == 4
    assert polling.scaled(1) == 4
    args = parse_args(["status", "--timeout-factor=1.5"])
    assert args.timeout_factor == 1.5
    with pytest.raises(SystemExit):
        parse_args(["status", "--timeout-factor", "0"])
    assert "positive" in capsys.readouterr().err


def test_the_command_reads_the_factor_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                          capsys):
    monkeypatch.setenv(polling.TIMEOUT_FACTOR_ENV, "3")
    assert parse_args(["status"]).timeout_factor == 3
    monkeypatch.setenv(polling.TIMEOUT_FACTOR_ENV, "slow")
    with pytest.raises(SystemExit):
        parse_args(["status"])
    assert polling.TIMEOUT_FACTOR_ENV in capsys.readouterr().err


def test_argparse_type_error_reads_well():
    from harness.cli.arguments import timeout_factor

    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        timeout_factor("-2")
