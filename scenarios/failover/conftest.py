"""Fixtures of the failover suite: the lab (two amphorae, two members), the pair created on it
the way a controller creates an ACTIVE_STANDBY load balancer, and timeline recording.

Tests may leave an amphora dead or stopped: the function-scoped `pair` fixture replaces an
amphora that does not serve (the controller's failover flow) before the next test, so every test
starts from a whole, settled pair. Timelines go to results/failover/<name>.json and .png,
whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.amphora_api.pki import CertificateAuthority
from harness.drivers.factory import DriverFactory
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model.yaml_loader import load_lb
from harness.observe.results_file import merge_json_entries
from harness.observe.traffic import TimelineRecorder
from harness.pytest_plugin import LabShape
from scenarios.failover.pair import (
    LB_DEFINITION,
    SITE_NAMES,
    TOPOLOGY,
    VRRP,
    Pair,
    save_timeline,
)


@pytest.fixture(scope="module")
def lab_shape() -> LabShape:
    return LabShape(amphorae=2, members=2, agent_settings={"topology": TOPOLOGY})


@pytest.fixture(scope="session")
def failover_results(results_dir: Path) -> Path:
    return results_dir / "failover"


@pytest.fixture(scope="module")
def tenant_ca() -> CertificateAuthority:
    return CertificateAuthority("failover tenant CA")


@pytest.fixture(scope="module")
def sriov_vip() -> bool:
    """Whether the pair's VIP port is SR-IOV, so that the amphorae filter it themselves; a
    module overrides this fixture to say so."""
    return False


@pytest.fixture(scope="module")
def pair_under_test(lab: Lab, amphorae: list[LabAmphora], members: list[LabMember],
                    tenant_ca: CertificateAuthority, sriov_vip: bool,
                    lb_driver_factory: DriverFactory) -> Pair:
    """The create flow, as the session's driver (--driver) runs it for an ACTIVE_STANDBY load
    balancer."""
    vip = lab.allocate_vip()
    certificates = {name: tenant_ca.issue(host, dns_names=(host,)).bundle
                    for name, host in SITE_NAMES.items()}
    addresses = {"vip": str(vip), "m1": str(members[0].address), "m2": str(members[1].address)}
    lb = load_lb(LB_DEFINITION, addresses=addresses, certificates=certificates)
    lb.sriov_vip = sriov_vip
    member_ports, vip_ports = [], []
    for amphora in amphorae:
        member_ports.append(lab.attach_member_port(amphora))
        vip_ports.append(lab.attach_vip_port(amphora))
    controller = lb_driver_factory(lb, [a.client for a in amphorae], vrrp_group=VRRP)
    controller.create(vip_ports, member_ports)
    return Pair(lab, lb, controller, list(amphorae), list(members), tenant_ca)


@pytest.fixture
def pair(pair_under_test: Pair) -> Pair:
    """The pair, whole and settled (one master, traffic flowing through it)."""
    pair_under_test.ensure_whole()
    return pair_under_test


# --- timelines ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured_outages(failover_results: Path) -> Iterator[dict[str, dict[str, float]]]:
    """What each fault cost clients (pair.disruption), merged into results/failover/outages.json
    when the module ends, under a file lock: with pytest-xdist each worker ends its own copy of
    the module, and every worker's entries must stay."""
    outages: dict[str, dict[str, float]] = {}
    yield outages
    if outages:
        merge_json_entries(failover_results / "outages.json", outages)


@pytest.fixture
def record(pair: Pair, failover_results: Path,
           request: pytest.FixtureRequest) -> Iterator[Callable[[], TimelineRecorder]]:
    """Starts the test's timeline recorder; it is stopped and saved (JSON and PNG, named after
    the test) when the test ends, passed or failed."""
    recorders: list[TimelineRecorder] = []

    def start() -> TimelineRecorder:
        recorder = pair.recorder()
        recorders.append(recorder)
        recorder.start()
        return recorder

    yield start
    for number, recorder in enumerate(recorders):
        name = request.node.name + (f"-{number}" if number else "")
        save_timeline(failover_results, name, recorder.stop(), name)
