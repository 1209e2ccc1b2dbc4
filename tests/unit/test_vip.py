"""Who answers on the VIP (harness.observe.vip), judged from answers made up here: reading a
response, and when answers and the amphorae's own accounts agree on one master."""

from __future__ import annotations

import itertools
import json

import pytest

from harness.observe.vip import (
    AMPHORA_HEADER,
    MEMBER_HEADER,
    Answer,
    read_answer,
    settled_master,
    settled_on,
)


def by(amphora: str | None) -> Answer:
    return Answer(served=True, amphora=amphora, status=200)


FAILED = Answer(served=False, error="ConnectTimeout")


def test_an_answer_is_read_from_status_and_headers_in_any_case() -> None:
    answer = read_answer(200, {AMPHORA_HEADER.lower(): "amp-a", MEMBER_HEADER.upper(): "m1"})
    assert answer == Answer(served=True, amphora="amp-a", member="m1", status=200)
    # haproxy without a member to hand the request to: an answer, but no service.
    assert not read_answer(503, {}).served
    assert read_answer(404, {}).served


def test_with_carriers_an_answer_names_the_amphora_whose_member_port_the_member_saw() -> None:
    """Whatever haproxy.cfg the driver rendered (Octavia's adds no AMPHORA_HEADER)."""
    body = json.dumps({"member": "m1", "client": "198.18.2.130"}).encode()
    carriers = {"198.18.2.130": "amp-a"}
    assert read_answer(200, {AMPHORA_HEADER: "amp-b"}, body, carriers).amphora == "amp-a"
    assert read_answer(200, {}, body, {}).amphora is None
    assert read_answer(200, {}, b"no json", carriers).amphora is None
    assert read_answer(200, {AMPHORA_HEADER: "amp-b"}, body).amphora == "amp-b"


def test_answers_settle_when_all_come_from_one_amphora() -> None:
    assert settled_on([by("a")] * 3, {}) == "a"
    assert settled_on([by("a"), by("b"), by("a")], {}) is None
    assert settled_on([by("a"), FAILED], {}) is None
    assert settled_on([], {}) is None
    # Answers naming no amphora cannot tell which one it is without an account...
    assert settled_on([by(None)] * 3, {}) is None
    # ... and a mix of named and unnamed ones is not steady.
    assert settled_on([by("a"), by(None)], {"holds the VIP": ["a"]}) is None


def test_every_account_must_claim_the_answering_amphora_alone() -> None:
    assert settled_on([by("a")] * 2, {"holds the VIP": ["a"], "active": ["a"]}) == "a"
    # Split brain: both hold the VIP.
    assert settled_on([by("a")] * 2, {"holds the VIP": ["a", "b"]}) is None
    # The accounts name another amphora than the answers do.
    assert settled_on([by("a")] * 2, {"holds the VIP": ["b"]}) is None
    # /details has not caught up yet.
    assert settled_on([by("a")] * 2, {"holds the VIP": ["a"], "active": []}) is None
    # Octavia's haproxy.cfg adds no header: the accounts name the master.
    assert settled_on([by(None)] * 2, {"holds the VIP": ["b"]}) == "b"


def test_settled_master_waits_for_a_steady_run_and_can_wait_for_a_takeover() -> None:
    # The VIP answers from a, then flaps, then b answers steadily.
    script = iter(itertools.chain([by("a")] * 3, [by("a"), by("b"), FAILED],
                                  itertools.repeat(by("b"))))
    asked = []

    def ask(url: str) -> Answer:
        asked.append(url)
        return next(script)

    assert settled_master("http://vip/", 5.0, count=3, ask=ask, interval=0.0) == "a"
    assert settled_master("http://vip/", 5.0, count=3, ask=ask, interval=0.0,
                          other_than="a") == "b"
    assert set(asked) == {"http://vip/"} and len(asked) >= 9


def test_settled_master_says_what_it_saw_when_the_time_is_up() -> None:
    with pytest.raises(AssertionError) as failure:
        settled_master("http://vip/", 0.05, count=2, ask=lambda _: by("a"), interval=0.01,
                       accounts={"holds the VIP": lambda: ["a", "b"]}, error=AssertionError)
    message = str(failure.value)
    assert "did not settle" in message
    assert "answers: ['a', 'a']" in message and "holds the VIP: ['a', 'b']" in message
