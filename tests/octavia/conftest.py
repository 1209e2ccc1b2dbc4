"""Fixtures of Octavia's driver tests: the driver (harness.drivers.octavia_driver) for agents
running on this host, with the session's probe process (the plugin's start_octavia_probe: the
pinned Octavia, or --octavia-source)."""

from __future__ import annotations

import random
import resource
from collections.abc import Callable, Iterator, Sequence

import pytest

from harness.amphora_api.pki import CertificateAuthority, LabPKI
from harness.drivers.octavia_driver import OctaviaLoadBalancerDriver, amphora_limits
from harness.drivers.octavia_process import OctaviaProbe
from harness.model.loadbalancer import LoadBalancer
from tests.support.local_agent import RunningAgent


@pytest.fixture
def octavia_driver(start_octavia_probe: Callable[[], OctaviaProbe], pki: LabPKI
                   ) -> Iterator[Callable[..., OctaviaLoadBalancerDriver]]:
    """octavia_driver(lb, agents, **options): Octavia's driver for lb on these host agents;
    their limits are this host's (open files, memory), announced as the lab announces them."""
    made: list[OctaviaLoadBalancerDriver] = []

    def make(lb: LoadBalancer, agents: Sequence[RunningAgent],
             **options) -> OctaviaLoadBalancerDriver:
        limits = amphora_limits(resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                                agents[0].client.get_details())
        driver = OctaviaLoadBalancerDriver(
            start_octavia_probe(), lb, [a.client for a in agents], pki.driver,
            paths={a.amphora_id: a.amphora_paths() for a in agents}, limits=limits, **options)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture
def vip_address() -> str:
    """A loopback address of its own for the test's listeners: ports stay free of other tests'."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="module")
def tenant_ca() -> CertificateAuthority:
    return CertificateAuthority("tenant CA")
