"""The load-balancer model: grammars, cross-field rules, and loading fixtures from YAML."""

from __future__ import annotations

import pytest

from harness.model.loadbalancer import (
    Algorithm,
    HealthMonitor,
    InsertHeader,
    L7Action,
    L7Policy,
    L7Rule,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    ModelError,
    Pool,
    SessionPersistence,
)
from harness.model.yaml_loader import LB_FIXTURES_DIR, lb_fixture, load_lb
from tests.support.lb_fixtures import ADDRESSES


def http_lb(**listener_options) -> LoadBalancer:
    pool = Pool(members=[Member(address="198.18.2.11", port=8080)])
    listener = Listener(
        protocol=ListenerProtocol.HTTP, port=80, pools=[pool], default_pool_id=pool.id,
        **listener_options,
    )
    return LoadBalancer(vip_address="198.18.1.10", listeners=[listener])


def test_values_are_canonicalised():
    member = Member(address="2001:DB8:0::1", port=80)
    assert member.address == "2001:db8::1"
    listener = Listener(protocol="HTTP", port=80, allowed_cidrs=["10.1.2.3/8"],
                        insert_headers=["X-Forwarded-For"])
    assert listener.protocol is ListenerProtocol.HTTP
    assert listener.allowed_cidrs == ["10.0.0.0/8"]
    assert listener.insert_headers == [InsertHeader.X_FORWARDED_FOR]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Member(address="198.18.2.300", port=80), "Member.address"),
        (lambda: Member(address="fe80::1%eth0", port=80), "Member.address"),
        (lambda: Member(address="198.18.2.1", port=0), "Member.port"),
        (lambda: Member(address="198.18.2.1", port=True), "Member.port"),
        (lambda: Member(address="198.18.2.1", port="80"), "Member.port"),
        (lambda: Member(address="198.18.2.1", port=80, weight=257), "Member.weight"),
        (lambda: Member(id="not-a-uuid", address="198.18.2.1", port=80), "Member.id"),
        (lambda: Member(id="AAAAAAAA-0000-4000-8000-000000000000", address="1.1.1.1", port=1),
         "Member.id"),
        (lambda: Pool(algorithm="ROUNDROBIN"), "Pool.algorithm"),
        (lambda: HealthMonitor(type="HTTP", expected_codes="200-100"),
         "HealthMonitor.expected_codes"),
        (lambda: HealthMonitor(type="HTTP", url_path="health"), "HealthMonitor.url_path"),
        (lambda: SessionPersistence(type="APP_COOKIE"), "SessionPersistence.cookie_name"),
        (lambda: SessionPersistence(type="SOURCE_IP", cookie_name="x"),
         "SessionPersistence.cookie_name"),
        (lambda: L7Rule(type="HEADER", compare_type="EQUAL_TO", value="v"), "L7Rule.key"),
        (lambda: L7Rule(type="PATH", compare_type="EQUAL_TO", value="/a", key="k"), "L7Rule.key"),
        (lambda: L7Rule(type="FILE_TYPE", compare_type="CONTAINS", value="jpg"),
         "L7Rule.compare_type"),
        (lambda: L7Rule(type="PATH", compare_type="REGEX", value="(unclosed"), "L7Rule.value"),
        (lambda: L7Rule(type="PATH", compare_type="REGEX", value="a\\.b"), "L7Rule.value"),
        (lambda: L7Policy(action="REDIRECT_TO_URL"), "L7Policy.redirect_url"),
        (lambda: L7Policy(action="REJECT", redirect_url="http://a/"), "L7Policy.redirect_url"),
        (lambda: L7Policy(action="REDIRECT_TO_URL", redirect_url="http://a/%0a"),
         "L7Policy.redirect_url"),
        (lambda: Listener(protocol="TERMINATED_HTTPS", port=443), "Listener.certificate"),
        (lambda: Listener(protocol="TCP", port=1, insert_headers=["X-Forwarded-For"]),
         "Listener.insert_headers"),
        (lambda: Listener(protocol="TCP", port=1,
                          l7policies=[L7Policy(action="REJECT")]), "Listener.l7policies"),
        (lambda: Listener(protocol="HTTP", port=1, default_pool_id=Pool().id),
         "Listener.default_pool_id"),
        (lambda: Listener(protocol="TCP", port=1, pools=[Pool(
            session_persistence=SessionPersistence(type="HTTP_COOKIE"))]), "Listener.pools"),
        (lambda: LoadBalancer(vip_address="198.18.1.10", listeners=[
            Listener(protocol="HTTP", port=80), Listener(protocol="TCP", port=80)]),
         "LoadBalancer.listeners"),
    ],
)
def test_invalid_values_raise_model_error_naming_the_field(build, field):
    with pytest.raises(ModelError) as caught:
        build()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_mutation_is_caught_on_the_next_validation_with_the_path_of_the_field():
    lb = http_lb()
    lb.listeners[0].pools[0].members[0].weight = -1
    with pytest.raises(ModelError) as caught:
        lb.validate()
    assert caught.value.field == "LoadBalancer.listeners[0].pools[0].members[0].weight"


def test_ids_must_be_unique_across_the_load_balancer():
    lb = http_lb()
    pool = lb.listeners[0].pools[0]
    pool.members.append(Member(id=pool.members[0].id, address="198.18.2.12", port=80))
    with pytest.raises(ModelError, match="ids used twice"):
        lb.validate()


def test_redirect_pool_must_belong_to_the_listener():
    lb = http_lb()
    lb.listeners[0].l7policies.append(
        L7Policy(action=L7Action.REDIRECT_TO_POOL, redirect_pool_id=Pool().id)
    )
    with pytest.raises(ModelError) as caught:
        lb.validate()
    assert caught.value.field == "LoadBalancer.listeners[0].l7policies"


def test_expected_codes_expand_to_an_alternation():
    monitor = HealthMonitor(type="HTTP", expected_codes="200-202,204")
    assert monitor.expected_codes_regex == "200|201|202|204"


@pytest.mark.parametrize("path", sorted(LB_FIXTURES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_fixture_loads(path, pems):
    lb = load_lb(path, addresses=ADDRESSES, certificates=pems)
    assert lb.listeners
    for listener in lb.listeners:
        assert listener.default_pool_id in {pool.id for pool in listener.pools}


def test_fixture_names_resolve_to_ids_and_addresses(pems):
    lb = load_lb(lb_fixture("l7"), addresses=ADDRESSES)
    listener = lb.listener("http")
    pools = {pool.name: pool for pool in listener.pools}
    assert listener.default_pool_id == pools["web"].id
    to_api = next(p for p in listener.l7policies if p.name == "to-api")
    assert to_api.redirect_pool_id == pools["api"].id
    assert pools["api"].members[0].address == ADDRESSES["m2"]
    assert lb.vip_address == ADDRESSES["vip"]


def test_each_load_makes_fresh_ids():
    first = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    second = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    assert first.id != second.id
    assert first.listeners[0].id != second.listeners[0].id


def test_a_certificate_named_twice_is_one_certificate(pems):
    lb = load_lb(lb_fixture("https-sni"), addresses=ADDRESSES, certificates=pems)
    https = lb.listener("https")
    assert [cert.name for cert in https.certificates] == ["default", "site-a", "site-b"]
    assert https.certificate.pem == pems["default"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("vip_address: nowhere\n", "LoadBalancer.vip_address"),
        ("vip_address: vip\nlisteners: [{protocol: HTTP, port: 80, colour: red}]\n",
         "LoadBalancer.listeners[0]"),
        ("vip_address: vip\nlisteners: [{protocol: HTTP}]\n", "LoadBalancer.listeners[0]"),
        ("vip_address: vip\nlisteners: [{protocol: HTTP, port: 80, default_pool: nope}]\n",
         "LoadBalancer.listeners[0].default_pool"),
        ("vip_address: vip\nlisteners: [{protocol: TERMINATED_HTTPS, port: 443, "
         "certificate: unknown}]\n", "LoadBalancer.listeners[0].certificate"),
        ("vip_address: vip\nlisteners: [{protocol: HTTP, port: 80, pools: "
         "[{members: [{address: m1, port: 80, weight: '1\\nglobal'}]}]}]\n",
         "LoadBalancer.listeners[0].pools[0].members[0].weight"),
        ("listeners: [\n", "yaml"),
        ("- just a list\n", "LoadBalancer"),
    ],
)
def test_bad_yaml_names_where_the_problem_is(text, where):
    with pytest.raises(ModelError) as caught:
        load_lb(text, addresses=ADDRESSES)
    assert caught.value.field == where


def test_yaml_defaults_follow_octavia():
    lb = load_lb(lb_fixture("http"), addresses=ADDRESSES)
    listener = lb.listeners[0]
    assert listener.connection_limit == 2000
    assert (listener.timeout_client_data, listener.timeout_member_connect) == (50000, 5000)
    assert listener.pools[0].algorithm is Algorithm.ROUND_ROBIN
    assert all(m.weight == 1 and m.admin_state_up for m in listener.pools[0].members)
