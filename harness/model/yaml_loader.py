"""Load load-balancer definitions from YAML (fixtures/lbs/*.yaml) into the model.

The YAML mirrors the model's field names, with three conveniences, because a fixture is written
before a lab exists:
- ids may be left out (a fresh UUID is generated on every load, so one fixture can be pushed as
  several independent load balancers);
- objects are referred to by name: a listener's `default_pool` and an L7 policy's
  `redirect_pool` name a pool of the same listener;
- addresses and certificates may be symbolic: `vip_address: vip` or a member's `address: m1` is
  looked up in the `addresses` mapping the caller passes (the lab knows its VIP and member
  addresses at push time), and `certificate: site` / `sni_certificates: [a, b]` name PEMs in the
  `certificates` mapping. A literal IP address is used as it is.
Unknown keys are errors (a typo must not silently drop a setting).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from harness.model.loadbalancer import (
    Certificate,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    Member,
    Model,
    ModelError,
    Pool,
    SessionPersistence,
)
from harness.paths import FIXTURES_DIR

LB_FIXTURES_DIR = FIXTURES_DIR / "lbs"


def lb_fixture(name: str) -> Path:
    """Path of fixtures/lbs/<name>.yaml."""
    return LB_FIXTURES_DIR / f"{name}.yaml"


class _Loader:
    def __init__(self, addresses: Mapping[str, str], certificates: Mapping[str, bytes]) -> None:
        self._addresses = addresses
        self._pems = certificates
        self._certificates: dict[str, Certificate] = {}

    def load_balancer(self, data: Any) -> LoadBalancer:
        where = "LoadBalancer"
        data = _mapping(data, where)
        listeners = [
            self.listener(item, f"{where}.listeners[{i}]")
            for i, item in enumerate(_list(data.pop("listeners", []), f"{where}.listeners"))
        ]
        if "vip_address" in data:
            data["vip_address"] = self.address(data["vip_address"], f"{where}.vip_address")
        return _build(LoadBalancer, data, where, listeners=listeners)

    def listener(self, data: Any, where: str) -> Listener:
        data = _mapping(data, where)
        pools = [
            self.pool(item, f"{where}.pools[{i}]")
            for i, item in enumerate(_list(data.pop("pools", []), f"{where}.pools"))
        ]
        pool_ids = _ids_by_name(pools, f"{where}.pools")
        extra: dict[str, Any] = {"pools": pools}
        if "default_pool" in data:
            extra["default_pool_id"] = _lookup(
                pool_ids, data.pop("default_pool"), f"{where}.default_pool"
            )
        if "certificate" in data:
            extra["certificate"] = self.certificate(data.pop("certificate"), f"{where}.certificate")
        if "sni_certificates" in data:
            names = _list(data.pop("sni_certificates"), f"{where}.sni_certificates")
            extra["sni_certificates"] = [
                self.certificate(name, f"{where}.sni_certificates[{i}]")
                for i, name in enumerate(names)
            ]
        extra["l7policies"] = [
            self.policy(item, f"{where}.l7policies[{i}]", pool_ids)
            for i, item in enumerate(_list(data.pop("l7policies", []), f"{where}.l7policies"))
        ]
        return _build(Listener, data, where, **extra)

    def pool(self, data: Any, where: str) -> Pool:
        data = _mapping(data, where)
        members = [
            self.member(item, f"{where}.members[{i}]")
            for i, item in enumerate(_list(data.pop("members", []), f"{where}.members"))
        ]
        extra: dict[str, Any] = {"members": members}
        if data.get("health_monitor") is not None:
            extra["health_monitor"] = _build(
                HealthMonitor,
                _mapping(data.pop("health_monitor"), f"{where}.health_monitor"),
                f"{where}.health_monitor",
            )
        if data.get("session_persistence") is not None:
            extra["session_persistence"] = _build(
                SessionPersistence,
                _mapping(data.pop("session_persistence"), f"{where}.session_persistence"),
                f"{where}.session_persistence",
            )
        return _build(Pool, data, where, **extra)

    def member(self, data: Any, where: str) -> Member:
        data = _mapping(data, where)
        if "address" in data:
            data["address"] = self.address(data["address"], f"{where}.address")
        return _build(Member, data, where)

    def policy(self, data: Any, where: str, pool_ids: Mapping[str, str]) -> L7Policy:
        data = _mapping(data, where)
        extra: dict[str, Any] = {
            "rules": [
                _build(L7Rule, _mapping(item, f"{where}.rules[{i}]"), f"{where}.rules[{i}]")
                for i, item in enumerate(_list(data.pop("rules", []), f"{where}.rules"))
            ]
        }
        if "redirect_pool" in data:
            extra["redirect_pool_id"] = _lookup(
                pool_ids, data.pop("redirect_pool"), f"{where}.redirect_pool"
            )
        return _build(L7Policy, data, where, **extra)

    def address(self, value: Any, where: str) -> str:
        if isinstance(value, str) and value in self._addresses:
            return self._addresses[value]
        try:
            ipaddress.ip_address(value)
        except ValueError:
            known = ", ".join(sorted(self._addresses)) or "none given"
            raise ModelError(
                where, f"{value!r} is neither an IP address nor a known name ({known})"
            ) from None
        return value

    def certificate(self, name: Any, where: str) -> Certificate:
        if not isinstance(name, str) or name not in self._pems:
            known = ", ".join(sorted(self._pems)) or "none given"
            raise ModelError(where, f"{name!r} is not a known certificate ({known})")
        if name not in self._certificates:
            self._certificates[name] = Certificate(name=name, pem=self._pems[name])
        return self._certificates[name]


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelError(where, f"expected a mapping, got {type(data).__name__}")
    return dict(data)


def _list(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise ModelError(where, f"expected a list, got {type(data).__name__}")
    return data


def _build(cls: type[Model], data: dict[str, Any], where: str, **extra: Any) -> Any:
    declared = fields(cls)  # type: ignore[arg-type]
    allowed = {f.name for f in declared} - set(extra)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ModelError(where, f"unknown keys: {', '.join(map(str, unknown))}")
    missing = [
        f.name
        for f in declared
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ModelError(where, f"missing keys: {', '.join(missing)}")
    try:
        return cls(**data, **extra)
    except ModelError as exc:
        raise ModelError(f"{where}.{exc.field.split('.', 1)[1]}", exc.problem) from None


def _ids_by_name(pools: list[Pool], where: str) -> dict[str, str]:
    by_name: dict[str, str] = {}
    for pool in pools:
        if pool.name is None:
            continue
        if pool.name in by_name:
            raise ModelError(where, f"two pools are named {pool.name!r}")
        by_name[pool.name] = pool.id
    return by_name


def _lookup(pool_ids: Mapping[str, str], name: Any, where: str) -> str:
    if name not in pool_ids:
        raise ModelError(where, f"{name!r} is not the name of one of the listener's pools")
    return pool_ids[name]


@dataclass(frozen=True)
class LbDefinition:
    """A load-balancer definition, read and parsed once: the certificates it names (a caller
    issues those before loading) and the load balancer it describes. Loading leaves `data` as
    it is (the loader copies each mapping before taking it apart), so one definition loads any
    number of times."""

    data: Any

    @classmethod
    def read(cls, source: Path | str) -> LbDefinition:
        """From a YAML file (a Path) or YAML text (a str); ModelError if it is not YAML."""
        text = source.read_text() if isinstance(source, Path) else source
        try:
            return cls(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise ModelError("yaml", str(exc)) from None

    @property
    def certificate_names(self) -> list[str]:
        """The symbolic certificate names its listeners refer to (default, SNI), in order."""
        listeners = self.data.get("listeners") if isinstance(self.data, dict) else None
        names: list[str] = []
        for listener in listeners if isinstance(listeners, list) else []:
            if not isinstance(listener, dict):
                continue
            wanted = [listener.get("certificate"), *(listener.get("sni_certificates") or [])]
            names += [n for n in wanted if isinstance(n, str) and n not in names]
        return names

    def load(self, *, addresses: Mapping[str, str] | None = None,
             certificates: Mapping[str, bytes] | None = None) -> LoadBalancer:
        return _Loader(addresses or {}, certificates or {}).load_balancer(self.data)


def load_lb(
    source: Path | str,
    *,
    addresses: Mapping[str, str] | None = None,
    certificates: Mapping[str, bytes] | None = None,
) -> LoadBalancer:
    """Load a load balancer from a YAML file (a Path) or YAML text (a str)."""
    return LbDefinition.read(source).load(addresses=addresses, certificates=certificates)
