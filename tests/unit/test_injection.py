"""No value can smuggle a line (or an argument) into a rendered config.

A table of hostile values is tried against every field of every model class that reaches a
config: on its own, and appended to a valid value of that field (the classic way past a check
that only looks at the beginning). Each one must raise ModelError naming the field, and a
rendered config must never come out of a tree holding one.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from harness.amphora_api.pki import CertificateAuthority
from harness.model.loadbalancer import (
    Certificate,
    CompareType,
    HealthMonitor,
    HostRoute,
    L7Policy,
    L7Rule,
    L7RuleType,
    Listener,
    LoadBalancer,
    Member,
    Model,
    ModelError,
    Pool,
    SessionPersistence,
    VipSubnet,
    VrrpAmphora,
    VrrpGroup,
)
from harness.paths import FIXTURES_DIR
from harness.render.amphora_configs import AmphoraPaths, render_haproxy

HOSTILE: list[str] = [
    *yaml.safe_load((FIXTURES_DIR / "hostile-values.yaml").read_text()),
    "x" * 5000,
]
# Suffixes for a valid value (the classic way past a check that only looks at the beginning).
HOSTILE_SUFFIXES = [value for value in HOSTILE if value]
# Things of the wrong type altogether.
HOSTILE_TYPES = [1.5, b"bytes", ["x\n"], {"x": 1}]

CA = CertificateAuthority()
PEM = CA.issue("inject.example.com").bundle


def valid_objects() -> list[Model]:
    """One valid instance of every model class whose fields reach a config, with every optional
    string field filled so each is exercised."""
    member = Member(name="m1", address="198.18.2.11", port=8080)
    pool = Pool(
        name="web",
        members=[member],
        health_monitor=HealthMonitor(type="HTTP", url_path="/health", expected_codes="200"),
        session_persistence=SessionPersistence(type="APP_COOKIE", cookie_name="SESSION"),
    )
    rule = L7Rule(type="HEADER", compare_type="EQUAL_TO", key="X-Test", value="yes")
    to_url = L7Policy(action="REDIRECT_TO_URL", redirect_url="http://example.com/", rules=[rule])
    to_pool = L7Policy(action="REDIRECT_TO_POOL", redirect_pool_id=pool.id,
                       rules=[L7Rule(type="PATH", compare_type="STARTS_WITH", value="/api")])
    certificate = Certificate(name="site", pem=PEM)
    listener = Listener(
        name="https", protocol="TERMINATED_HTTPS", port=443, certificate=certificate,
        sni_certificates=[Certificate(pem=PEM)], pools=[pool], default_pool_id=pool.id,
        l7policies=[to_url, to_pool], insert_headers=["X-Forwarded-For"],
        allowed_cidrs=["198.18.0.0/15"],
    )
    lb = LoadBalancer(name="lb", vip_address="198.18.1.10", listeners=[listener])
    route = HostRoute(destination="10.0.0.0/8", nexthop="198.18.1.254")
    return [
        member, pool.health_monitor, pool.session_persistence, pool, rule, to_url, to_pool,
        certificate, listener, lb, route, VipSubnet(cidr="198.18.1.0/24", gateway="198.18.1.1",
                                                    host_routes=[route]),
        VrrpGroup(),
        VrrpAmphora(amphora_id="6f1c8a52-3a57-4c7e-9a55-0d4f3f0e2b11", role="MASTER",
                    vrrp_ip="198.18.1.21", interface="eth1", peer_ips=["198.18.1.22"]),
        AmphoraPaths(),
    ]


def field_cases() -> list[tuple[Model, str]]:
    cases = []
    for obj in valid_objects():
        for field in dataclasses.fields(obj):
            if field.name == "pem":
                continue  # uploaded as a file, never rendered into a config line
            cases.append((obj, field.name))
    return cases


def variants(valid) -> list:
    """The hostile table, plus each hostile value appended to the field's valid value."""
    values = HOSTILE + HOSTILE_TYPES
    if isinstance(valid, str):
        values += [valid + hostile for hostile in HOSTILE_SUFFIXES]
    if isinstance(valid, list) and valid and isinstance(valid[0], str):
        values += [[valid[0] + hostile] for hostile in HOSTILE_SUFFIXES]
    return values


def slipped_through(obj: Model, field: str) -> list:
    """The hostile values that obj.validate() accepted in field (or rejected naming another
    field)."""
    passed = []
    for value in variants(getattr(obj, field)):
        target = copy.deepcopy(obj)
        setattr(target, field, value)
        try:
            target.validate()
        except ModelError as exc:
            if exc.field != f"{type(obj).__name__}.{field}":
                passed.append((value, f"blamed {exc.field}"))
        else:
            passed.append(value)
    return passed


@pytest.mark.parametrize(
    ("obj", "field"), field_cases(), ids=lambda x: x if isinstance(x, str) else type(x).__name__
)
def test_every_field_refuses_every_hostile_value(obj, field):
    assert slipped_through(obj, field) == []


@pytest.mark.parametrize("rule_type", list(L7RuleType), ids=lambda t: t.value)
@pytest.mark.parametrize("compare_type", list(CompareType), ids=lambda t: t.value)
def test_rule_values_refuse_hostile_values_for_every_rule_and_compare_type(rule_type,
                                                                          compare_type):
    if rule_type is L7RuleType.FILE_TYPE and compare_type not in (CompareType.EQUAL_TO,
                                                                  CompareType.REGEX):
        pytest.skip("not a valid combination")
    key = "X-Key" if rule_type in (L7RuleType.HEADER, L7RuleType.COOKIE) else None
    rule = L7Rule(type=rule_type, compare_type=compare_type, key=key, value="abc")
    assert slipped_through(rule, "value") == []
    if key:
        assert slipped_through(rule, "key") == []


def test_construction_refuses_too():
    for hostile in HOSTILE_SUFFIXES:
        with pytest.raises(ModelError, match=r"^Member\.address: "):
            Member(address="198.18.2.11" + hostile, port=80)
        with pytest.raises(ModelError, match=r"^L7Policy\.redirect_url: "):
            L7Policy(action="REDIRECT_TO_URL", redirect_url="http://example.com/" + hostile)


def test_a_hostile_value_deep_in_a_tree_stops_the_render():
    for hostile in HOSTILE_SUFFIXES:
        objects = valid_objects()
        lb = next(obj for obj in objects if isinstance(obj, LoadBalancer))
        lb.listeners[0].l7policies[0].rules[0].value = "yes" + hostile
        with pytest.raises(ModelError, match=r"l7policies\[0\]\.rules\[0\]\.value"):
            render_haproxy(lb, "6f1c8a52-3a57-4c7e-9a55-0d4f3f0e2b11")


def test_the_valid_objects_render():
    """The table above is meaningful: the same objects without hostile values do render."""
    lb = next(obj for obj in valid_objects() if isinstance(obj, LoadBalancer))
    config = render_haproxy(lb, "6f1c8a52-3a57-4c7e-9a55-0d4f3f0e2b11")
    assert "acl " in config and "redirect code 302 location http://example.com/ if" in config
