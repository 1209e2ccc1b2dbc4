"""The pytest plugin's driver half: which controller drives the suites' load balancers, and which
Octavia it comes from. Loaded by harness.pytest_plugin.

Options:
    --driver harness|octavia   harness: our controller (harness.drivers.controller); octavia:
                               OpenStack Octavia's own amphora driver (harness.drivers.octavia)
    --octavia-source SOURCE    which Octavia: a PyPI version (default: the pinned one), a source
                               checkout directory (installed editable), or an sdist/wheel file
                               (harness.octavia_source); shared by everything that runs Octavia

Fixtures:
    octavia_source   session: the parsed --octavia-source (harness.octavia_source.OctaviaSource)
"""

from __future__ import annotations

import pytest

from harness.octavia_source import (
    DEFAULT_OCTAVIA_VERSION,
    OctaviaSource,
    OctaviaSourceError,
    parse_octavia_source,
)

DRIVERS = ("harness", "octavia")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--driver", default="harness", choices=DRIVERS,
                    help="the controller that drives the suites' load balancers: ours "
                         "(harness, the default) or OpenStack Octavia's amphora driver (octavia)")
    group.addoption("--octavia-source", default=None, metavar="SOURCE",
                    help="the OpenStack Octavia to run: a PyPI version (default "
                         f"{DEFAULT_OCTAVIA_VERSION}), a source checkout directory (installed "
                         "editable) or an sdist/wheel file")


def pytest_configure(config: pytest.Config) -> None:
    try:
        parse_octavia_source(config.getoption("--octavia-source"),
                             cwd=config.invocation_params.dir)
    except OctaviaSourceError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def octavia_source(request: pytest.FixtureRequest) -> OctaviaSource:
    return parse_octavia_source(request.config.getoption("--octavia-source"),
                                cwd=request.config.invocation_params.dir)
