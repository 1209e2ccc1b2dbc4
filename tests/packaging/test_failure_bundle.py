"""A lab test that fails leaves a bundle that explains it, and its report names its lab.

A user's test file (run by pytest in a folder of its own) brings up an active/standby pair with
the controller, sends traffic through the VIP, and fails on purpose; its bundle must hold every
item the plugin promises, and its JUnit report the lab id and image tag.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.observe.bundle import bundle_name
from tests.packaging.support import start, stop

pytestmark = pytest.mark.lab
RUN_TIMEOUT_S = 300

FAILING_TEST = '''
import pytest

from harness.drivers.controller import LoadBalancerController
from harness.model import loadbalancer as model
from harness.observe.traffic import TimelineRecorder
from harness.pytest_plugin import LabShape


@pytest.fixture(scope="module")
def lab_shape():
    return LabShape(amphorae=2, members=2, agent_settings={"topology": "ACTIVE_STANDBY"})


@pytest.fixture(scope="module")
def pair(lab, amphorae, members):
    pool = model.Pool(members=[model.Member(address=str(m.address), port=m.port("http"))
                               for m in members])
    listener = model.Listener(protocol=model.ListenerProtocol.HTTP, port=80,
                              connection_limit=2000, pools=[pool], default_pool_id=pool.id)
    lb = model.LoadBalancer(vip_address=str(lab.allocate_vip()), listeners=[listener],
                            topology=model.Topology.ACTIVE_STANDBY)
    controller = LoadBalancerController(lb, [a.client for a in amphorae])
    controller.create([lab.attach_vip_port(a) for a in amphorae],
                      [lab.attach_member_port(a) for a in amphorae])
    return lb


def test_fails_on_purpose(pair):
    url = f"http://{pair.vip_address}/"
    with TimelineRecorder(url, interval=0.1, max_duration=120) as recorder:
        # Until the pair has settled (keepalived's checks and election) and served a few.
        assert recorder.wait_until(lambda t: sum(s.ok for s in t.samples) >= 5, 90)
    assert False, "deliberately failing after traffic went through"
'''

PER_AMPHORA = ["agent.log", "haproxy.log", "ip-addr.txt", "ip-route.txt", "ip-rule.txt",
               "nft-ruleset.txt", "keepalived.conf", "keepalived.log", "keepalived-state.txt"]
PER_LB = ["haproxy.cfg", "show-stat.csv", "show-servers-state.txt"]


def test_a_failing_lab_test_leaves_a_bundle_and_its_report_names_the_lab(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_mine.py").write_text(FAILING_TEST)
    junit = project / "junit.xml"
    log = tmp_path / "pytest.log"
    process = start([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                     "--strict-markers", f"--provider={request.config.getoption('--provider')}",
                     f"--junitxml={junit}", "test_mine.py"], cwd=project, log=log)
    try:
        process.wait(RUN_TIMEOUT_S)
    finally:
        stop(process)
    output = log.read_text()
    assert process.returncode == 1, output  # one test failed: nothing else went wrong
    assert "deliberately failing after traffic went through" in output

    bundle = project / "results" / "failures" / bundle_name("test_mine.py::test_fails_on_purpose")
    assert f"bundle in {bundle}" in output
    summary = json.loads((bundle / "summary.json").read_text())
    assert summary["errors"] == []
    [lab] = summary["labs"]
    assert len(lab["amphorae"]) == 2
    holders = 0
    for name, amphora in lab["amphorae"].items():
        directory = bundle / lab["id"] / name
        files = set(amphora["files"])
        assert set(PER_AMPHORA) <= files, name
        [lb_dir] = [p for p in directory.iterdir() if p.name.startswith("lb-")]
        for item in PER_LB:
            assert (lb_dir / item).stat().st_size > 0, item
        assert "frontend" in (lb_dir / "haproxy.cfg").read_text()
        assert (lb_dir / "show-stat.csv").read_text().startswith("# pxname,svname")
        assert "vrrp_instance" in (directory / "keepalived.conf").read_text()
        assert "keepalived" in (directory / "keepalived-state.txt").read_text()
        assert "lookup main" in (directory / "ip-rule.txt").read_text()
        assert "eth" in (directory / "ip-addr.txt").read_text()
        # No firewall on a VIP that is not SR-IOV: nft ran and listed nothing.
        assert "rror" not in (directory / "nft-ruleset.txt").read_text()
        assert "haproxy" in (directory / "agent.log").read_text()
        # haproxy logged the requests of the amphora that held the VIP, which keepalived gave
        # the VIP's policy routing (table 1).
        if "GET / HTTP/1.1" in (directory / "haproxy.log").read_text():
            holders += 1
            assert "lookup 1" in (directory / "ip-rule.txt").read_text()
    assert holders >= 1
    [traffic] = summary["traffic"]
    assert json.loads((bundle / traffic["file"]).read_text())["samples"]

    # The JUnit report names the lab and the amphora image.
    case = next(ET.parse(junit).getroot().iter("testcase"))
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["amphora-harness.lab"] == lab["id"]
    images = {v for k, v in properties.items() if k.startswith("amphora-harness.image.")}
    assert images == {a["image"] for a in lab["amphorae"].values()}
    assert f"lab {lab['id']}" in output  # the report section
