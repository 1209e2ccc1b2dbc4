"""A reboot of the amphora (its container killed or stopped, then started again) brings back what
was pushed without any push: the ports are plugged again under the same names and the load
balancers serve again.

Whether a load balancer stopped through the API stays stopped across a reboot is not part of
the Amphora API, so it is not asked here: Octavia's controller never stops a haproxy load
balancer (its driver has no call for it), and Octavia's agent leaves the systemd unit of a
stopped one enabled (LoadBalancer.upload_haproxy_config, octavia/amphorae/backends/agent/
api_server/loadbalancer.py), so it runs again after a reboot. Ours keeps it stopped, which
tests/agent/test_reboot.py checks.
"""

from __future__ import annotations

import pytest
import requests

from harness.amphora_api.client import AmphoraAPIError
from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.lab import READY_TIMEOUT_S, Lab, LabAmphora
from harness.lab.octavia_agent import OCTAVIA, OCTAVIA_READY_TIMEOUT_S
from harness.polling import wait_until
from scenarios.config_push.test_serving import tcp_member

# After the agent answers again, how long its load balancers may take to serve (Octavia's
# systemd starts amphora-netns and the haproxy units alongside the agent).
SERVING_AGAIN_TIMEOUT_S = 60.0
POLL_S = 1.0


@pytest.mark.parametrize("power_off", ["kill", "stop"])
def test_a_rebooted_amphora_serves_again_without_a_push(power_off: str, load, deploy, lab: Lab,
                                                        amphora: LabAmphora, vip: str, vip_url,
                                                        until, who_answers, member_names,
                                                        amphora_host):
    http_lb, tcp_lb = load("http"), load("tcp")
    deploy(http_lb)
    deploy(tcp_lb)
    until(vip_url(80), lambda a: len(a) == 3)
    assert member_names[tcp_member(vip, 9000)] in {"m1", "m2"}
    links = amphora_host.check_output(f"ip -n {DATA_PLANE_NAMESPACE} -br link")

    # kill: SIGKILL of every process at once (a crashed VM); stop: the amphora's init shuts
    # keepalived, haproxy and the agent down first. Neither goes through the API.
    getattr(lab.provider, power_off)(amphora.node)
    lab.provider.start(amphora.node)

    # As long as the lab gives this agent to answer at boot (Octavia's: systemd, then a slow
    # Python start), scaled by the timeout factor.
    def agent_answers() -> bool:
        try:
            amphora.client.get_info()
        except (requests.RequestException, AmphoraAPIError):
            return False
        return True

    boot_s = OCTAVIA_READY_TIMEOUT_S if lab.agent == OCTAVIA else READY_TIMEOUT_S
    wait_until(agent_answers, boot_s, f"the agent of {amphora.name} answering again", POLL_S)
    # /info names the amphora by its hostname (Octavia's /info has no uuid).
    assert amphora.client.get_info()["hostname"] == amphora.node.spec.hostname

    def serves_both() -> bool:
        try:
            return (len(who_answers(vip_url(80), 6)) == 3
                    and member_names[tcp_member(vip, 9000)] in {"m1", "m2"})
        except (OSError, requests.RequestException, ValueError):
            return False

    wait_until(serves_both, SERVING_AGAIN_TIMEOUT_S, "both load balancers serving again", POLL_S)
    until(vip_url(80), lambda a: len(a) == 3)
    assert member_names[tcp_member(vip, 9000)] in {"m1", "m2"}
    statuses = {x["uuid"]: x["status"] for x in amphora.client.get_listeners()}
    assert statuses == {http_lb.listeners[0].id: "ACTIVE", tcp_lb.listeners[0].id: "ACTIVE"}
    # The same ports (MACs) under the same names in the data-plane namespace as before.
    assert _names_and_macs(amphora_host.check_output(
        f"ip -n {DATA_PLANE_NAMESPACE} -br link")) == _names_and_macs(links)


def _names_and_macs(brief_links: str) -> list[tuple[str, ...]]:
    """`ip -br link` rows without the peer index (a new veth after a reboot) and state."""
    rows = []
    for line in brief_links.splitlines():
        name, _state, mac, *_ = line.split()
        rows.append((name.split("@", 1)[0], mac))
    return sorted(rows)
