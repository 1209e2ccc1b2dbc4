"""The failover suite's system under test: an active/standby pair carrying one load balancer,
and how the suite observes it — from the outside only, by what the Amphora API contract and the
data plane promise for every agent: who holds the VIP (`ip addr` in each amphora's data-plane
namespace, testinfra) and who carries traffic through it. /details is not one of those accounts:
Octavia's agent reports `topology` SINGLE and `active` true whatever the amphora's VRRP role
(amphora_info.py); what our agent reports there is checked by a test of its own.

Which amphora carried a request is read from what the member saw (harness.observe.vip's
carriers): that holds for every driver, where the X-Amphora-Id header is our renderer's only.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import testinfra

from harness.amphora_api.client import AmphoraAPIError
from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.base import LoadBalancerDriver
from harness.lab import reach
from harness.lab.constants import DATA_PLANE_NAMESPACE, FAILOVER_VRRP
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model.loadbalancer import LoadBalancer, VrrpRole
from harness.observe.plots import plot_timeline
from harness.observe.traffic import Timeline, TimelineRecorder
from harness.observe.vip import STEADY_ANSWERS, Answer, ask, carriers_of, settled_master
from harness.polling import wait_until

TOPOLOGY = "ACTIVE_STANDBY"
LB_DEFINITION = Path(__file__).with_name("lb.yaml")
SITE_NAMES = {"default": "default.failover.test", "site-a": "site-a.failover.test"}
# Octavia's default VRRP timers (harness.lab.constants.FAILOVER_VRRP says why the check interval
# is not shortened): adverts every second, the check script every 5 s, 2 failures give
# mastership up.
VRRP = FAILOVER_VRRP
# How long a backup waits without adverts before it takes over (RFC 3768's Master_Down_Interval:
# 3 adverts plus a skew that is longest for the lowest priority).
MASTER_DOWN_S = 3 * VRRP.advert_int + (256 - VrrpRole.BACKUP.value) / 256 * VRRP.advert_int
# Bounds of the waits for a pair to settle (one master, the host's ARP entry on its MAC): the
# master's periodic gratuitous ARPs (garp_master_refresh) put the host right at the latest then.
SETTLE_TIMEOUT_S = MASTER_DOWN_S + VRRP.garp_refresh + 10
# Waits for a takeover: the timers, then as much again for scheduling and the ARP update.
TAKEOVER_TIMEOUT_S = 2 * MASTER_DOWN_S + 5
PROBE_TIMEOUT_S = 3.0


@dataclass
class Pair:
    """The load balancer on its two amphorae, and what the suite asks of them."""

    lab: Lab
    lb: LoadBalancer
    controller: LoadBalancerDriver
    amphorae: list[LabAmphora]
    members: list[LabMember]
    tenant_ca: CertificateAuthority
    replaced: list[str] = field(default_factory=list)

    @property
    def vip(self) -> str:
        return self.lb.vip_address

    @property
    def url(self) -> str:
        return f"http://{self.vip}:{self.lb.listener('http').port}/"

    def by_id(self, amphora_id: str) -> LabAmphora:
        return next(a for a in self.amphorae if a.id == amphora_id)

    def other(self, amphora: LabAmphora) -> LabAmphora:
        return next(a for a in self.amphorae if a is not amphora)

    def recorder(self, max_duration: float = 120.0) -> TimelineRecorder:
        return TimelineRecorder(self.url, max_duration=max_duration,
                                carriers=lambda: carriers_of(self.amphorae))

    # --- observations -------------------------------------------------------------------

    def holds_vip(self, amphora: LabAmphora) -> bool:
        """Whether the VIP is configured in the amphora's data-plane namespace (testinfra)."""
        host = testinfra.get_host(self.lab.provider.testinfra_backend(amphora.node))
        output = host.check_output(f"ip netns exec {DATA_PLANE_NAMESPACE} ip -o -4 addr show")
        return f" {self.vip}/32 " in output

    def processes(self, amphora: LabAmphora, name: str, *, full: bool = False) -> set[int]:
        """The ids of the processes named `name` in the amphora (pgrep -x), or with full, of
        those whose command line matches the regular expression `name` (pgrep -f)."""
        argv = ["pgrep", "-f", name] if full else ["pgrep", "-x", name]
        result = self.lab.provider.exec(amphora.node, argv)
        return {int(pid) for pid in result.output.split()} if result.ok else set()

    def carrier(self, seen_client: str) -> LabAmphora | None:
        """The amphora whose member-network port has the address a member saw (see the module
        docstring)."""
        amphora_id = carriers_of(self.amphorae).get(seen_client)
        return self.by_id(amphora_id) if amphora_id else None

    def ask(self, url: str) -> Answer:
        """One GET through the VIP on a new connection, its amphora named by the member."""
        return ask(url, timeout=PROBE_TIMEOUT_S, carriers=carriers_of(self.amphorae))

    def answering_amphora(self) -> LabAmphora | None:
        """The amphora that serves a new connection through the VIP now."""
        answer = self.ask(self.url)
        return self.by_id(answer.amphora) if answer.served and answer.amphora else None

    def masters(self) -> list[LabAmphora]:
        """The amphorae that hold the VIP."""
        return [a for a in self.amphorae if self.holds_vip(a)]

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT_S) -> LabAmphora:
        """Wait (bounded) until exactly one amphora is master by both accounts (it alone holds
        the VIP, and traffic through the VIP flows through it); return it."""
        accounts = {"holds the VIP": lambda: [a.id for a in self.masters()]}
        master = settled_master(self.url, timeout, accounts=accounts, ask=self.ask,
                                interval=VRRP.advert_int / 2, error=AssertionError)
        return self.by_id(master)

    # --- the whole configuration ----------------------------------------------------------

    def assert_full_config_served(self, master: LabAmphora) -> None:
        """Every listener answers through the VIP from master, with the right certificates."""
        member_ids = {m.id for m in self.members}
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(self.url, timeout=PROBE_TIMEOUT_S)
        assert response.status_code == 200
        assert self.carrier(response.json()["client"]) is master
        assert response.json()["member"] in member_ids
        port = self.lb.listener("https").port
        for server_name, expected in (("site-a.failover.test", "site-a.failover.test"),
                                      ("other.failover.test", "default.failover.test")):
            common_name, _headers, body = https_get(self.vip, port, server_name,
                                                    self.tenant_ca)
            assert common_name == expected, server_name
            assert self.carrier(json.loads(body)["client"]) is master
            assert json.loads(body)["member"] in member_ids
        answer = tcp_line(self.vip, self.lb.listener("tcp").port)
        assert answer["member"] in member_ids and answer["proto"] == "tcp"
        assert self.carrier(answer["client"]) is master

    # --- repair -------------------------------------------------------------------------

    def replace(self, lost: LabAmphora) -> LabAmphora:
        """What a controller does after losing an amphora: the cloud boots a new one and plugs
        its ports; the failover flow pushes the load balancer and the VRRP configs to it."""
        if self.lab.provider.is_running(lost.node):  # the cloud deletes the lost amphora
            self.lab.provider.kill(lost.node)
        new = self.lab.add_amphora(topology=TOPOLOGY)
        member_port = self.lab.attach_member_port(new)
        self.controller.replace_amphora(lost.id, new.client, self.lab.attach_vip_port(new),
                                        member_port)
        self.amphorae[self.amphorae.index(lost)] = new
        self.replaced.append(lost.id)
        return new

    def serves(self, amphora: LabAmphora) -> bool:
        """Running, with every listener of the load balancer ACTIVE (a killed or stopped
        amphora is left down for this to find and a controller to replace)."""
        if not self.lab.provider.is_running(amphora.node):
            return False
        try:
            listeners = amphora.client.get_listeners()
        except (requests.RequestException, AmphoraAPIError):
            return False
        return ({item["uuid"]: item["status"] for item in listeners}
                == {listener.id: "ACTIVE" for listener in self.lb.listeners})

    def ensure_whole(self) -> LabAmphora:
        """Replace amphorae that do not serve (a test killed or stopped them); return the
        master once the pair has settled."""
        for amphora in list(self.amphorae):
            if not self.serves(amphora):
                self.replace(amphora)
        return self.wait_settled()


def https_get(address: str, port: int, server_name: str,
              ca: CertificateAuthority) -> tuple[str, dict[str, str], bytes]:
    """GET / over TLS with SNI server_name: the served certificate's CN, the response headers
    (lower-case names) and body."""
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    context.check_hostname = False  # which certificate is served is what we look at
    with reach.connect(address, port, timeout=PROBE_TIMEOUT_S) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        subject = dict(item for rdn in tls.getpeercert()["subject"] for item in rdn)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
                    .encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    assert " 200 " in status, status
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return subject["commonName"], headers, body


def tcp_line(address: str, port: int) -> dict:
    """The one JSON line a member's TCP service sends, through a TCP listener."""
    with reach.connect(address, port, timeout=PROBE_TIMEOUT_S) as connection, \
            connection.makefile("rb") as stream:
        return json.loads(stream.readline())


def save_timeline(directory: Path, name: str, timeline: Timeline, title: str) -> None:
    timeline.write_json(directory / f"{name}.json")
    plot_timeline(timeline, directory / f"{name}.png", title)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll condition (bounded) every half advert interval; fail saying what did not happen."""
    wait_until(condition, timeout, what, VRRP.advert_int / 2, AssertionError)


def wait_for_answers(recorder: TimelineRecorder, amphora: LabAmphora, since: float,
                     timeout: float, count: int = STEADY_ANSWERS) -> bool:
    """Wait (bounded) until `count` requests sent after `since` were answered through amphora."""
    return recorder.wait_until(
        lambda t: t.answered_by(since=since).get(amphora.id, 0) >= count, timeout)


def disruption(timeline: Timeline, since: float) -> dict[str, float]:
    """What a fault at `since` cost clients: the outage (first failed request to the success
    that ended the last failure run), the down time (Timeline.downtime: the longest time
    without any answer, the bench's measure too), failed requests."""
    outage = timeline.outage_since(since)
    return {"outage_s": round(outage.duration if outage else 0.0, 3),
            "downtime_s": round(timeline.downtime(since), 3),
            "failed_requests": outage.failed if outage else 0}
