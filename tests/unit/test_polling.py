"""harness.polling: waits end, and say what they waited for."""

from __future__ import annotations

import itertools

import pytest

from harness.polling import poll_until, wait_until


def test_poll_until_returns_as_soon_as_the_condition_holds():
    calls = itertools.count(1)
    assert poll_until(lambda: next(calls) >= 3, timeout=5, interval=0.001)
    assert next(calls) == 4  # called three times, not more


def test_poll_until_gives_up_at_the_deadline_with_a_bounded_number_of_calls():
    calls = itertools.count(1)
    assert not poll_until(lambda: next(calls) < 0, timeout=0.05, interval=0.01)
    assert 2 <= next(calls) <= 12


def test_wait_until_raises_the_given_error_naming_what_it_waited_for():
    with pytest.raises(AssertionError, match="the VIP on amp2 not within 0s"):
        wait_until(lambda: False, 0.01, "the VIP on amp2", 0.005, AssertionError)
    with pytest.raises(TimeoutError):
        wait_until(lambda: False, 0.01, "anything", 0.005)
    wait_until(lambda: True, 0.01, "nothing")
