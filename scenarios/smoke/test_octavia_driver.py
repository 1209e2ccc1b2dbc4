"""Smoke with Octavia's own driver, whatever --driver says: a lab amphora — the image's agent, on
the image's Python and libraries — is plugged and configured by OpenStack Octavia's
HaproxyAmphoraLoadBalancerDriver (harness.drivers.octavia_driver, its create flow), and serves
Octavia's rendered haproxy.cfg to real traffic.
"""

from __future__ import annotations

import pytest
import requests
import tenacity

from harness.drivers.base import LoadBalancerDriver
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model import loadbalancer as model

LISTENER_PORT = 80
REQUESTS = 20


@pytest.fixture(scope="module")
def octavia_lb(lab: Lab, amphora: LabAmphora, members: list[LabMember],
               lb_driver_factory) -> LoadBalancerDriver:
    """Octavia's create flow for a SINGLE load balancer on the lab amphora: VIP port and member
    port plugged, listeners rendered by Octavia's templates, uploaded and started."""
    pool = model.Pool(members=[model.Member(address=str(m.address), port=m.port("http"))
                               for m in members])
    lb = model.LoadBalancer(vip_address=str(lab.allocate_vip()), listeners=[model.Listener(
        protocol=model.ListenerProtocol.HTTP, port=LISTENER_PORT, pools=[pool],
        default_pool_id=pool.id)])
    driver = lb_driver_factory(lb, [amphora.client], driver="octavia")
    driver.create([lab.attach_vip_port(amphora)], [lab.attach_member_port(amphora)])
    return driver


def answering_members(url: str, count: int) -> set[str]:
    with requests.Session() as session:
        session.trust_env = False
        return {session.get(url, headers={"Connection": "close"}, timeout=5).json()["member"]
                for _ in range(count)}


def test_octavias_driver_configures_a_lab_amphora_that_serves(
        octavia_lb: LoadBalancerDriver, amphora: LabAmphora, members: list[LabMember]) -> None:
    lb = octavia_lb.lb
    url = f"http://{lb.vip_address}:{LISTENER_PORT}/"
    # The first request may race the reload's new worker: retried, bounded.
    served = tenacity.Retrying(stop=tenacity.stop_after_attempt(20),
                               wait=tenacity.wait_fixed(0.25), reraise=True)(
        answering_members, url, REQUESTS)
    assert served == {m.id for m in members}
    assert [(x["uuid"], x["status"]) for x in amphora.client.get_listeners()] == [
        (lb.listeners[0].id, "ACTIVE")]
    # What the agent runs is Octavia's rendering, not ours.
    config = amphora.client.get_config(lb.id).body
    assert octavia_lb.rendered_configs() == {amphora.id: config}
    assert "X-Amphora-Id" not in config and "log-format" in config

    octavia_lb.delete()
    assert amphora.client.get_listeners() == []
    with pytest.raises(requests.ConnectionError):
        answering_members(url, 1)
