"""Who answers on a VIP, seen from a client namespace of a NetnsLab (tests/support/netns_lab.py)
and asked of the agents: the amphora holding it, the member behind it, or nothing yet.

(The judgement is the harness's, harness.observe.vip; here the questions are asked from a
namespace.)
"""

from __future__ import annotations

import json
import subprocess
import sys

from harness.amphora_api.client import AmphoraAPIError
from harness.observe.vip import Answer, read_answer
from harness.observe.vip import settled_master as settled_master_of
from harness.polling import poll_until
from tests.support.local_agent import RunningAgent
from tests.support.netns_lab import NetnsLab

# keepalived takes the VIP after its master-down interval; an election and the gratuitous ARPs
# after it take a few advert intervals more.
ANSWER_TIMEOUT_S = 40.0
ELECTION_TIMEOUT_S = 30.0
VIP_ANSWER_ATTEMPTS = 30

# Run in the client's namespace: GET url and print the status and headers of the answer, which
# harness.observe.vip reads (the amphora's and the member's ids are headers).
_ASK = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        print(json.dumps({"status": response.status, "headers": dict(response.headers)}))
except OSError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def ask_from(client: str, url: str) -> Answer:
    """One GET of url from the client namespace, read as harness.observe.vip reads answers."""
    output = json.loads(subprocess.run(
        ["ip", "netns", "exec", client, sys.executable, "-c", _ASK, url],
        capture_output=True, text=True, check=True, timeout=20,
    ).stdout)
    if "error" in output:
        return Answer(served=False, error=output["error"])
    return read_answer(output["status"], output["headers"])


def who_answers(client: str, vip: str, port: int) -> dict:
    """{"amphora": id or None, "member": id} for one GET from the client namespace, or
    {"error": ...}."""
    answer = ask_from(client, f"http://{vip}:{port}/")
    if not answer.served:
        return {"error": answer.error or f"status {answer.status}"}
    return {"amphora": answer.amphora, "member": answer.member}


def first_answer(client: str, vip: str, port: int) -> dict:
    """who_answers, asked again (a bounded number of times) until the VIP answers: after a plug
    or an election it takes a moment."""
    answer: dict = {}
    for _ in range(VIP_ANSWER_ATTEMPTS):
        answer = who_answers(client, vip, port)
        if "error" not in answer:
            return answer
    return answer


def wait_for_answer(lab: NetnsLab, client: str, url: str) -> str:
    """The first body of GET url from the client namespace that is not an error, or the last
    error after ANSWER_TIMEOUT_S."""
    seen = {"answer": ""}

    def answered() -> bool:
        seen["answer"] = lab.http_get(client, url)
        return not seen["answer"].startswith("error")

    poll_until(answered, ANSWER_TIMEOUT_S, 0.5)
    return seen["answer"]


def vip_holders(agents: list[RunningAgent], vip: str) -> list[str]:
    """Ids of the amphorae whose data plane holds the VIP (asked through the API)."""
    holders = []
    for agent in agents:
        try:
            agent.client.get_interface(vip)
        except AmphoraAPIError as exc:
            assert exc.status == 404
            continue
        holders.append(agent.amphora_id)
    return holders


def settled_master(client: str, agents: list[RunningAgent], vip: str, port: int,
                   not_this: RunningAgent | None = None) -> RunningAgent:
    """The agent that holds the VIP once exactly one (other than not_this) does and the VIP
    answers through it (bounded; harness.observe.vip.settled_master, asked from the client
    namespace). An answer that names its amphora (our haproxy.cfg adds X-Amphora-Id; Octavia's
    does not) must name the holder.

    Which amphora wins the first election is not fixed: both keepalived start as BACKUP with
    nopreempt (as Octavia configures them), and whichever Master_Down timer fires first takes
    the VIP; the priorities only decide it when adverts already flow.
    """
    master = settled_master_of(
        f"http://{vip}:{port}/", ELECTION_TIMEOUT_S, count=1,
        accounts={"holds the VIP (API)": lambda: vip_holders(agents, vip)},
        other_than=not_this.amphora_id if not_this else None,
        ask=lambda url: ask_from(client, url), interval=0.2, error=AssertionError)
    return next(a for a in agents if a.amphora_id == master)
