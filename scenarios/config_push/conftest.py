"""Fixtures of the config_push suite: one amphora with its VIP and member ports plugged, three
members, and `deploy`, which pushes a load balancer through the session's driver (--driver:
ours or Octavia's, harness.drivers.base) and deletes it when the test ends. Everything is
observed through real traffic to the VIP."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

import pytest
import requests
import tenacity

from harness.drivers.base import LoadBalancerDriver
from harness.drivers.factory import DriverFactory
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.model.loadbalancer import LoadBalancer
from harness.model.yaml_loader import lb_fixture, load_lb
from harness.polling import poll_until
from harness.pytest_plugin import LabShape

# Bounds of the polls that wait for a push to take effect on the data plane.
SETTLE_ATTEMPTS = 40
SETTLE_INTERVAL_S = 0.25


@pytest.fixture(scope="module")
def lab_shape() -> LabShape:
    return LabShape(amphorae=1, members=3)


@pytest.fixture(scope="module")
def vip(lab: Lab, amphora: LabAmphora) -> str:
    """The VIP, plugged as a cloud does (port attached, then plug/vip), and the member network
    plugged (plug/network)."""
    address = lab.allocate_vip()
    lab.plug_vip(amphora, address)
    lab.plug_member_network(amphora)
    return str(address)


@pytest.fixture(scope="module")
def addresses(vip: str, members: list[LabMember]) -> dict[str, str]:
    """The symbolic names of fixtures/lbs/*.yaml: vip, m1, m2, m3."""
    return {"vip": vip, **{f"m{n}": str(m.address) for n, m in enumerate(members, start=1)}}


@pytest.fixture(scope="module")
def member_names(members: list[LabMember]) -> dict[str, str]:
    """Lab member id (what the member answers) -> m1, m2, m3."""
    return {m.id: f"m{n}" for n, m in enumerate(members, start=1)}


@pytest.fixture
def load(addresses: dict[str, str]) -> Callable[..., LoadBalancer]:
    """load(name, certificates=None): fixtures/lbs/<name>.yaml with this lab's addresses."""

    def load_fixture(name: str, certificates: dict[str, bytes] | None = None) -> LoadBalancer:
        return load_lb(lb_fixture(name), addresses=addresses, certificates=certificates)

    return load_fixture


@pytest.fixture
def deploy(
    amphora: LabAmphora, vip: str, lb_driver_factory: DriverFactory
) -> Iterator[Callable[[LoadBalancer], LoadBalancerDriver]]:
    """deploy(lb): create lb on the amphora (upload, start); deleted again at teardown."""
    drivers: list[LoadBalancerDriver] = []

    def create(lb: LoadBalancer) -> LoadBalancerDriver:
        driver = lb_driver_factory(lb, [amphora.client])
        drivers.append(driver)
        driver.create()
        return driver

    yield create
    for driver in drivers:
        driver.delete()
        driver.close()


def retrying(what: type[BaseException] | tuple = AssertionError) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(what),
        stop=tenacity.stop_after_attempt(SETTLE_ATTEMPTS),
        wait=tenacity.wait_fixed(SETTLE_INTERVAL_S),
        reraise=True,
    )


@pytest.fixture
def vip_url(vip: str) -> Callable[[int], str]:
    return lambda port, scheme="http": f"{scheme}://{vip}:{port}/"


@pytest.fixture
def who_answers(http: requests.Session, member_names: dict[str, str]):
    """who_answers(url, count, **request options) -> Counter of m1/m2/m3 over count requests,
    each on a new connection (so the balancing algorithm decides every one)."""

    def answers_to(url: str, count: int, **options) -> collections.Counter:
        answers: collections.Counter = collections.Counter()
        for _ in range(count):
            response = http.get(url, headers={"Connection": "close"}, timeout=5, **options)
            response.raise_for_status()
            answers[member_names[response.json()["member"]]] += 1
        return answers

    return answers_to


@pytest.fixture
def settled() -> Callable[[Callable[[], bool]], bool]:
    """settled(condition): poll condition (bounded, as long as `until`) until it holds; whether
    it did. A push is answered 202, Accepted, and takes effect a moment later: Octavia's agent
    answers a reload once systemd has signalled haproxy, while the old worker still takes
    connections."""
    return lambda condition: poll_until(condition, SETTLE_ATTEMPTS * SETTLE_INTERVAL_S,
                                        SETTLE_INTERVAL_S)


@pytest.fixture
def until(who_answers) -> Callable:
    """until(url, check, count=12): poll (bounded) until check(Counter) is true; returns the
    last Counter. For effects that need a moment (a reload, a health check)."""

    def poll(url: str, check: Callable[[collections.Counter], bool], count: int = 12):
        def attempt() -> collections.Counter:
            answers = who_answers(url, count)
            assert check(answers), answers
            return answers

        return retrying((AssertionError, requests.RequestException))(attempt)

    return poll
