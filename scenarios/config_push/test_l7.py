"""L7 policies, inserted headers and allowed CIDRs, through the VIP (fixtures/lbs/l7.yaml)."""

from __future__ import annotations

import pytest
import requests

from harness.lab.lab import Lab

# Run on the VIP-network client: GET url, print the member that answered (or the error).
CLIENT_GET = """
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        print(json.load(response)["member"])
except OSError as exc:
    print("error", exc)
"""


@pytest.fixture
def l7_lb(load, deploy, vip_url, until):
    lb = load("l7")
    controller = deploy(lb)
    until(vip_url(80), lambda a: set(a) == {"m1"})
    return controller


def member_of(http: requests.Session, url: str, member_names: dict, **options) -> str:
    response = http.get(url, timeout=5, allow_redirects=False, **options)
    response.raise_for_status()
    return member_names[response.json()["member"]]


def test_policies_route_as_defined(l7_lb, http, vip, member_names):
    base = f"http://{vip}"
    assert member_of(http, f"{base}/", member_names) == "m1"
    assert member_of(http, f"{base}/api/v1/items", member_names) == "m2"
    assert member_of(http, f"{base}/", member_names,
                     headers={"Host": "static.example.com"}) == "m3"
    assert member_of(http, f"{base}/apix", member_names) == "m2"  # STARTS_WITH /api
    assert member_of(http, f"{base}/v1/api", member_names) == "m1"

    rejected = http.get(f"{base}/api", headers={"X-Debug": "on"}, timeout=5)
    assert rejected.status_code == 403

    moved = http.get(f"{base}/old/page", timeout=5, allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (301, "http://new.example.com/")


def test_inserted_headers_arrive_at_members(l7_lb, http, vip, lab: Lab):
    answer = http.get(f"http://{vip}/", timeout=5).json()
    assert answer["forwarded_for"] == str(lab.traffic_source())
    assert answer["forwarded_port"] == "80"
    assert answer["forwarded_proto"] == "http"


@pytest.mark.driver_specific(
    "harness", reason="Octavia filters allowed_cidrs with the VIP port's security group "
    "(controller/worker/v2/tasks/network_tasks.py UpdateVIPSecurityGroup), which the lab has no "
    "counterpart of; its haproxy.cfg carries none, and only an SR-IOV VIP is filtered on the "
    "amphora (scenarios/failover/test_sriov_vip.py checks that with either driver)")
def test_a_client_outside_the_allowed_cidrs_is_refused(l7_lb, http, vip, lab: Lab, vip_client,
                                                      member_names, until, settled, vip_url):
    client_address = vip_client.spec.address
    l7_lb.lb.listeners[0].allowed_cidrs = [f"{client_address}/32"]
    l7_lb.update()

    def host_refused() -> bool:
        try:
            http.get(f"http://{vip}/", timeout=5)
        except requests.ConnectionError:
            return True
        return False

    assert settled(host_refused)
    assert all(host_refused() for _ in range(3))
    output = lab.provider.exec(vip_client, ["python3", "-c", CLIENT_GET, f"http://{vip}/"])
    assert output.ok, output.output
    assert member_names.get(output.output.strip()) == "m1", output.output

    l7_lb.lb.listeners[0].allowed_cidrs = []
    l7_lb.update()
    until(vip_url(80), lambda a: set(a) == {"m1"})
