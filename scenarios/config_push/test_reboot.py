"""A reboot of the amphora (its container killed or stopped, then started again) brings back what
was pushed without any push: the agent plugs its ports again and starts the load balancers that
were running; one that was stopped through the API stays stopped."""

from __future__ import annotations

import pytest

from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.lab import Lab, LabAmphora
from scenarios.config_push.test_serving import connection_refused, tcp_member


@pytest.mark.agent_xfail(
    "octavia", reason="Octavia's agent enables haproxy-<lb>.service on every config upload and "
    "disables it only on delete (LoadBalancer.upload_haproxy_config / delete_lb, "
    "octavia/amphorae/backends/agent/api_server/loadbalancer.py), so a load balancer stopped "
    "through the API starts again at boot")
@pytest.mark.parametrize("power_off", ["kill", "stop"])
def test_a_rebooted_amphora_serves_again_without_a_push(power_off: str, load, deploy, lab: Lab,
                                                        amphora: LabAmphora, vip: str, vip_url,
                                                        until, member_names, amphora_host):
    http_lb, tcp_lb = load("http"), load("tcp")
    deploy(http_lb)
    deploy(tcp_lb)
    until(vip_url(80), lambda a: len(a) == 3)
    assert member_names[tcp_member(vip, 9000)] in {"m1", "m2"}
    amphora.client.stop(tcp_lb.id)
    assert connection_refused(vip, 9000)
    links = amphora_host.check_output(f"ip -n {DATA_PLANE_NAMESPACE} -br link")

    # kill: SIGKILL of every process at once (a crashed VM); stop: the amphora's init shuts
    # keepalived, haproxy and the agent down first. Neither goes through the API.
    getattr(lab.provider, power_off)(amphora.node)
    lab.provider.start(amphora.node)
    # The client retries (bounded) until the agent answers; it restores before it serves.
    # (/info names the amphora by its hostname: Octavia's /info has no uuid.)
    assert amphora.client.get_info()["hostname"] == amphora.node.spec.hostname

    until(vip_url(80), lambda a: len(a) == 3)
    assert connection_refused(vip, 9000)
    statuses = {x["uuid"]: x["status"] for x in amphora.client.get_listeners()}
    assert statuses == {http_lb.listeners[0].id: "ACTIVE", tcp_lb.listeners[0].id: "STOPPED"}
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
