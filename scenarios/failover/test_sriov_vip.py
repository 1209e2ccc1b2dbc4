"""A pair whose VIP port is SR-IOV (Octavia's vnic_type direct): no security group stands in
front of it, so the amphorae filter the VIP themselves. The controller plugs the VIP with
is_sriov and sends each amphora its rules (PUT /1.0/interface/{ip}/rules): every listener port
from its allowed CIDRs, and VRRP from the peer.

Observed from outside only: a port the rules do not open stays silent (the SYN is dropped),
where without the firewall it is refused; VRRP goes on working across a failover and an
amphora replacement.

The ruleset is stateful (replies to what the amphora sent are let in), which has a consequence
for VRRP worth knowing: once both amphorae of a pair have sent adverts to each other, even
briefly as two masters, each one's adverts count as replies on the other side, so the peer's
VRRP rule only matters to a backup that has never been master.
"""

from __future__ import annotations

import pytest

from harness.faults.injector import FaultInjector
from harness.lab import reach
from harness.lab.lab import Lab
from harness.lab.providers.base import Node
from scenarios.failover.pair import TAKEOVER_TIMEOUT_S, Pair, wait_for, wait_for_answers

# Every test needs traffic through the pair, which Octavia's agent cannot carry here. Seen in
# its amphora (nft list ruleset in the data-plane namespace): the member replies arrive on the
# member port untracked and are dropped; an `iifname "eth2" ct state untracked accept` rule let
# them in and the VIP answered.
pytestmark = pytest.mark.agent_xfail(
    "octavia", reason="with an SR-IOV VIP, Octavia's agent drops the members' replies on a "
    "(non-SR-IOV) member port: its VIP firewall's input chain (policy drop) lets in only "
    "conntrack-established traffic on interfaces other than the VIP's "
    "(write_nftable_rules_file in octavia/amphorae/backends/utils/nftable_utils.py), while "
    "lvs-masquerade.sh, run for every non-SR-IOV port (PortInterfaceFile in octavia/amphorae/"
    "backends/utils/interface_file.py), marks that port's TCP `notrack`, so the replies are "
    "untracked, never established; haproxy reaches no member and the VIP answers nothing")

CLOSED_PORT = 81  # no listener: refused without the firewall, silent with it
CONNECT_TIMEOUT_S = 2.0

# Run on the VIP-network client: how a TCP connect to host:port ends.
CONNECT_PROBE = f"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout={CONNECT_TIMEOUT_S}).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("silent")
"""


@pytest.fixture(scope="module")
def sriov_vip() -> bool:
    return True


def connect_from_host(address: str, port: int) -> str:
    try:
        reach.connect(address, port, timeout=CONNECT_TIMEOUT_S).close()
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "silent"
    return "open"


def connect_from(lab: Lab, client: Node, address: str, port: int) -> str:
    result = lab.provider.exec(client, ["python3", "-c", CONNECT_PROBE, address, str(port)])
    assert result.ok, result.output
    return result.output.strip()


def test_the_pair_serves_only_what_its_rules_open(pair: Pair) -> None:
    master = pair.wait_settled()
    pair.assert_full_config_served(master)
    assert connect_from_host(pair.vip, CLOSED_PORT) == "silent"


def test_allowed_cidrs_are_enforced_before_haproxy(pair: Pair, lab: Lab,
                                                  vip_client: Node) -> None:
    """haproxy's own allowed_cidrs check accepts the connection and then closes it; the
    firewall never lets the SYN in."""
    pair.wait_settled()
    http = pair.lb.listener("http")
    http.allowed_cidrs = [f"{vip_client.spec.address}/32"]
    try:
        pair.controller.update()
        assert connect_from_host(pair.vip, http.port) == "silent"
        assert connect_from(lab, vip_client, pair.vip, http.port) == "open"
        # The other listeners still allow everyone.
        assert connect_from_host(pair.vip, pair.lb.listener("tcp").port) == "open"
    finally:
        http.allowed_cidrs = []
        pair.controller.update()
    assert connect_from_host(pair.vip, http.port) == "open"


def test_a_replacement_gets_rules_that_name_the_survivor(pair: Pair, faults: FaultInjector) -> None:
    master = pair.wait_settled()
    survivor = pair.other(master)
    faults.leave(faults.kill(master))  # the cloud deletes it; pair.replace boots a new one
    recorder = pair.recorder()
    recorder.start()
    try:
        assert wait_for_answers(recorder, survivor, since=0, timeout=TAKEOVER_TIMEOUT_S)
    finally:
        recorder.stop()
    new = pair.replace(master)
    assert pair.wait_settled() is survivor  # nopreempt: the newcomer stays backup
    # The newcomer takes over when the survivor dies: it hears and is heard over VRRP, and
    # its firewall opens the listeners.
    faults.leave(faults.kill(survivor))
    wait_for(lambda: pair.answering_amphora() is new, TAKEOVER_TIMEOUT_S,
             f"{new.name} answering through the VIP")
    pair.assert_full_config_served(new)
    assert connect_from_host(pair.vip, CLOSED_PORT) == "silent"
