"""Who answers on the VIP: which amphora and member carried a request sent through it, and when
the answers have settled on one amphora (a pair's VRRP master).

Only what a client sees is used. The haproxy.cfg we render adds AMPHORA_HEADER to every HTTP
response (harness.render), and the lab's member server adds MEMBER_HEADER
(harness.lab.member_server). Whatever haproxy.cfg a driver renders (Octavia's adds no
AMPHORA_HEADER), the member's answer names the amphora too: haproxy connects to members from its
amphora's member-network port, and the member answers with the client address it saw; given
`carriers` (that address -> amphora id, carriers_of), an answer names its amphora by it.
A response below 500 counts as served: a 5xx comes from a haproxy with no member to hand the
request to, or from a failing member, and is no service.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import requests

from harness.lab.lab import LabAmphora
from harness.polling import poll_until

AMPHORA_HEADER = "X-Amphora-Id"
MEMBER_HEADER = "X-Member-Id"
PROBE_TIMEOUT_S = 2.0
# Consecutive answers, all from one amphora, that count as settled.
STEADY_ANSWERS = 10
SETTLE_POLL_S = 0.5


@dataclass(frozen=True)
class Answer:
    """One request through the VIP as its client saw it."""

    served: bool
    amphora: str | None = None  # the AMPHORA_HEADER of the response
    member: str | None = None  # its MEMBER_HEADER
    status: int | None = None  # None: no response at all
    error: str | None = None  # why there was none (the exception's name)


def read_answer(status: int, headers: Mapping[str, str], body: bytes = b"",
                carriers: Mapping[str, str] | None = None) -> Answer:
    """The answer a response gives, from its status and headers (names in any case); with
    carriers, its amphora from the client address the member saw (the body's "client")."""
    by_name = {name.lower(): value for name, value in headers.items()}
    amphora = by_name.get(AMPHORA_HEADER.lower())
    if carriers is not None:
        amphora = carriers.get(_seen_client(body))
    return Answer(served=status < 500, amphora=amphora,
                  member=by_name.get(MEMBER_HEADER.lower()), status=status)


def _seen_client(body: bytes) -> str:
    try:
        return str(json.loads(body)["client"])
    except (ValueError, KeyError, TypeError):
        return ""


def carriers_of(amphorae: Sequence[LabAmphora]) -> dict[str, str]:
    """Member-network address -> id of the amphora whose port it is."""
    return {str(port.ip_address): amphora.id for amphora in amphorae for port in amphora.ports
            if port.network.spec.role == "member"}


def ask(url: str, *, timeout: float = PROBE_TIMEOUT_S, verify: bool | str = False,
        carriers: Mapping[str, str] | None = None) -> Answer:
    """Send one GET to url on a new connection, as a new client would. No proxy from the
    environment: lab traffic goes straight onto the lab's bridges."""
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(url, timeout=timeout, verify=verify,
                                   headers={"Connection": "close"})
    except requests.RequestException as exc:
        return Answer(served=False, error=type(exc).__name__)
    return read_answer(response.status_code, response.headers, response.content, carriers)


class Identified(Protocol):
    @property
    def id(self) -> str: ...


AmphoraT = TypeVar("AmphoraT", bound=Identified)


def answering_amphora(url: str, amphorae: Sequence[AmphoraT], *,
                      timeout: float = PROBE_TIMEOUT_S,
                      carriers: Mapping[str, str] | None = None) -> AmphoraT | None:
    """Of amphorae, the one that serves a new connection to url now (the VRRP master of a
    pair); None when the request is not served or names none of them. carriers: see ask."""
    answer = ask(url, timeout=timeout, carriers=carriers)
    if not answer.served:
        return None
    return next((a for a in amphorae if a.id == answer.amphora), None)


def settled_on(answers: Sequence[Answer], claims: Mapping[str, Collection[str]]) -> str | None:
    """The amphora id that a series of answers and the amphorae's own accounts agree on, or
    None while they do not.

    They agree when every answer was served, all answers name the same amphora or none names
    any (a haproxy.cfg without AMPHORA_HEADER, such as Octavia's), exactly one amphora is named
    by the answers and the claims together, and every account (claims: account name -> the ids
    of the amphorae that claim to be master by it) claims it alone."""
    if not answers or not all(a.served for a in answers):
        return None
    named = {a.amphora for a in answers}
    if len(named) != 1:
        return None
    candidates = (named - {None}).union(*claims.values())
    if len(candidates) != 1:
        return None
    (master,) = candidates
    if any(set(claimants) != {master} for claimants in claims.values()):
        return None
    return master


def settled_master(url: str, timeout: float, *,
                   accounts: Mapping[str, Callable[[], Collection[str]]] | None = None,
                   count: int = STEADY_ANSWERS, other_than: str | None = None,
                   ask: Callable[[str], Answer] = ask, interval: float = SETTLE_POLL_S,
                   error: type[Exception] = TimeoutError) -> str:
    """Wait (bounded) until `count` requests in a row through url are answered by one amphora
    and every account agrees it is the master (see settled_on); return its id.

    accounts: what the amphorae say themselves, by name (e.g. who holds the VIP), each giving
    the ids that claim mastership; other_than: an amphora id that must not be the master (to
    wait for a takeover); ask: how one request is sent (a test may send it from a namespace).
    Raises error saying what was seen last when the time is up."""
    accounts = accounts or {}
    seen: dict[str, object] = {}
    found: list[str] = []

    def settled() -> bool:
        answers = [ask(url) for _ in range(count)]
        claims = {name: sorted(claimants()) for name, claimants in accounts.items()}
        seen.clear()
        seen.update(answers=[a.amphora if a.served else a.error or f"status {a.status}"
                             for a in answers], **claims)
        master = settled_on(answers, claims)
        if master is None or master == other_than:
            return False
        found[:] = [master]
        return True

    if not poll_until(settled, timeout, interval):
        last = "; ".join(f"{name}: {value}" for name, value in seen.items())
        raise error(f"the VIP {url} did not settle on one master within {timeout:.0f}s "
                    f"(last seen: {last})")
    return found[0]
