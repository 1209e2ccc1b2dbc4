"""Topology files and flags, and the state a standing lab leaves for later commands."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from harness.amphora_api.pki import LabPKI
from harness.faults.kinds import KINDS
from harness.faults.standing import targets_for
from harness.lab.addressing import subnet_plan
from harness.lab.providers.docker import DockerProvider
from harness.lab.shape import (
    TOPOLOGIES_DIR,
    TopologyError,
    load_topology,
    resolve_lb,
    with_overrides,
)
from harness.lab.standing import StandingLab
from harness.lab.standing_state import (
    SCHEMA,
    STATE_DIR_ENV,
    AmphoraRecord,
    LabRecord,
    LoadBalancerRecord,
    MemberRecord,
    NetworkRecord,
    NodeRecord,
    PortRecord,
    StandingLabError,
    choose_lab,
    load_record,
)
from harness.model.loadbalancer import Topology
from harness.model.yaml_loader import LbDefinition


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


# --- topologies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in TOPOLOGIES_DIR.glob("*.yaml")))
def test_every_shipped_topology_loads(name: str) -> None:
    topology = load_topology(name)
    assert topology.amphorae >= topology.lb_amphorae
    assert topology.load_balancer is None or topology.load_balancer.is_file()


def test_the_pair_topology_and_overrides() -> None:
    pair = load_topology("active-standby")
    assert (pair.topology, pair.amphorae, pair.lb_amphorae) == (Topology.ACTIVE_STANDBY, 2, 2)
    single = with_overrides(pair, topology="single")
    assert (single.topology, single.amphorae) == (Topology.SINGLE, 1)
    spares = with_overrides(pair, amphorae=3, members=4, load_balancer="tcp")
    assert (spares.amphorae, spares.members, spares.load_balancer.name) == (3, 4, "tcp.yaml")
    assert with_overrides(pair, no_load_balancer=True).load_balancer is None


@pytest.mark.parametrize(("text", "message"), [
    ("topology: TRIPLE\n", "SINGLE or ACTIVE_STANDBY"),
    ("topology: ACTIVE_STANDBY\namphorae: 1\n", "amphorae must be 2..8"),
    ("members: many\n", "members must be a whole number"),
    ("members: 99\n", "members must be 0..20"),
    ("colour: blue\n", "unknown keys: colour"),
    ("- a list\n", "expected a mapping"),
    ("members: 1\nload_balancer: http\n", "'m2' is neither an IP address"),
    ("load_balancer: nowhere\n", "no load balancer named 'nowhere'"),
])
def test_bad_topology_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError, match=message):
        load_topology(str(path))


def test_a_topology_names_its_lb_by_a_path_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "lb.yaml").write_text(resolve_lb("tcp").read_text())
    (tmp_path / "mine.yaml").write_text("members: 2\nload_balancer: lb.yaml\n")
    assert load_topology(str(tmp_path / "mine.yaml")).load_balancer == tmp_path / "lb.yaml"


def test_certificate_names_of_an_lb_file() -> None:
    assert LbDefinition.read(resolve_lb("https-sni")).certificate_names == [
        "default", "site-a", "site-b"]
    assert LbDefinition.read(resolve_lb("http")).certificate_names == []


# --- standing labs ------------------------------------------------------------------------------

LAB_ID = "0badcafe"
AMPHORA_IDS = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]


def node(name: str, role: str, network_role: str, address: str) -> NodeRecord:
    return NodeRecord(name=f"amphora-harness-{LAB_ID}-{name}", handle=f"handle-{name}",
                      hostname=name, image="amphora-harness/amphora:x", role=role,
                      network_role=network_role, address=address)


def make_record(pki_dir: Path, agent: str = "ours",
                octavia_source: dict[str, str] | None = None) -> LabRecord:
    networks = []
    for role in ("lb-mgmt", "vip", "member"):
        plan = subnet_plan(5, role)
        networks.append(NetworkRecord(role=role, name=f"net-{role}", handle=f"id-{role}",
                                      subnet=str(plan.subnet), gateway=str(plan.gateway),
                                      dynamic_range=str(plan.dynamic_range)))
    amphorae = [
        AmphoraRecord(id=amphora_id, node=node(f"amphora-{n}", "amphora", "lb-mgmt",
                                               f"198.18.15.{n + 2}"),
                      ready_s=1.5, agent_settings={"amphora_id": amphora_id, "ca_path": "/ca",
                                                   "server_pem_path": "/pem"},
                      ports=[PortRecord("vip", f"02:42:00:00:00:0{n}", f"198.18.16.{128 + n}"),
                             PortRecord("member", f"02:42:00:00:01:0{n}",
                                        f"198.18.17.{128 + n}")])
        for n, amphora_id in enumerate(AMPHORA_IDS)]
    record = LabRecord(
        lab_id=LAB_ID, provider="docker", index=5, topology="ACTIVE_STANDBY", lb_amphorae=2,
        vip="198.18.16.100", created_at=0.0, networks=networks, amphorae=amphorae,
        members=[MemberRecord(id="m-one", node=node("member-0", "member", "member",
                                                    "198.18.17.2"))],
        agent=agent, octavia_source=octavia_source,
        load_balancer=LoadBalancerRecord(
            source="fixtures/lbs/http.yaml", id="lb", vrrp_auth_pass="secret",
            listeners=[{"port": 80, "protocol": "HTTP"},
                       {"port": 443, "protocol": "TERMINATED_HTTPS"}]),
    )
    pki = LabPKI(pki_dir)
    record.directory.mkdir(parents=True)
    record.driver.ca.write_bytes(pki.driver.ca.read_bytes())
    record.driver.client_pem.write_bytes(pki.driver.client_pem.read_bytes())
    record.save()
    return record


@pytest.fixture
def standing(tmp_path: Path) -> StandingLab:
    record = make_record(tmp_path / "pki")
    # The provider object is only held, never called, by what these tests use.
    lab = StandingLab(load_record(LAB_ID), DockerProvider.__new__(DockerProvider))
    yield lab
    lab.close()
    assert record.directory.is_dir()


def test_no_lab_one_lab_or_several(tmp_path: Path, state_dir: Path) -> None:
    with pytest.raises(StandingLabError, match="no lab is up"):
        choose_lab(None)
    make_record(tmp_path / "pki")
    assert choose_lab(None).lab_id == LAB_ID
    (state_dir / "feedf00d").mkdir()
    (state_dir / "feedf00d" / "state.json").write_text((state_dir / LAB_ID / "state.json")
                                                       .read_text())
    with pytest.raises(StandingLabError, match="2 labs are up"):
        choose_lab(None)
    assert choose_lab(LAB_ID).lab_id == LAB_ID


def test_a_record_survives_the_round_trip(tmp_path: Path) -> None:
    written = make_record(tmp_path / "pki")
    assert load_record(LAB_ID) == written


def test_an_unreadable_record_says_how_to_get_rid_of_it(tmp_path: Path, state_dir: Path) -> None:
    make_record(tmp_path / "pki")
    (state_dir / LAB_ID / "state.json").write_text(f'{{"schema": {SCHEMA}}}')
    with pytest.raises(StandingLabError, match=f"down --lab {LAB_ID}"):
        load_record(LAB_ID)
    (state_dir / LAB_ID / "state.json").write_text('{"schema": 99}')
    with pytest.raises(StandingLabError, match="schema 99"):
        load_record(LAB_ID)


def test_the_rebuilt_lab(standing: StandingLab) -> None:
    assert [a.id for a in standing.lb_amphorae] == AMPHORA_IDS
    assert standing.amphorae[1].mgmt_address == IPv4Address("198.18.15.3")
    assert standing.amphorae[0].agent_settings.amphora_id == AMPHORA_IDS[0]
    assert standing.networks["vip"].spec.subnet == IPv4Network("198.18.16.0/24")
    assert standing.addresses() == {"vip": "198.18.16.100", "m1": "198.18.17.2"}
    ports = standing.vip_ports()
    assert [p.vrrp_ip for p in ports] == ["198.18.16.128", "198.18.16.129"]
    assert ports[0].plug_request()["gateway"] == "198.18.16.1"


def test_amphorae_by_index_name_or_id_prefix(standing: StandingLab) -> None:
    second = standing.amphorae[1]
    assert standing.amphora("1") is second
    assert standing.amphora("amphora-1") is second
    assert standing.amphora("2222") is second
    with pytest.raises(StandingLabError, match="names 0 amphorae"):
        standing.amphora("nobody")


def test_listener_urls(standing: StandingLab) -> None:
    lb = standing.record.load_balancer
    assert lb.url(standing.record.vip) == "http://198.18.16.100:80/"
    assert lb.url(standing.record.vip, 443) == "https://198.18.16.100:443/"
    with pytest.raises(StandingLabError, match="no listener on port 8080"):
        lb.url(standing.record.vip, 8080)


def test_fault_targets(standing: StandingLab) -> None:
    assert targets_for(standing, KINDS["partition"], []) == standing.amphorae
    assert targets_for(standing, KINDS["kill"], ["1"]) == [standing.amphorae[1]]
    with pytest.raises(StandingLabError, match="acts on 1 amphora, 2 given"):
        targets_for(standing, KINDS["stop"], ["0", "1"])
