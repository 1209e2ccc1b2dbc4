"""The pytest plugin's driver half: which controller drives the suites' load balancers, and which
Octavia it comes from. Loaded by harness.pytest_plugin.

Options:
    --driver harness|octavia   harness: our controller (harness.drivers.controller); octavia:
                               OpenStack Octavia's own amphora driver (harness.drivers.octavia_
                               driver), called in its controller's flow order
    --octavia-source SOURCE    which Octavia: a PyPI version (default: the pinned one), a source
                               checkout directory (installed editable) or an sdist/wheel file
                               (harness.octavia_source); shared by everything that runs Octavia
    --diff-configs             after every push, both drivers' haproxy.cfg for the same model,
                               side by side in results/diff-configs/<test id>.md

Markers:
    driver_specific(name, reason=...)   the test means only driver `name`: under the other one
                                        it is deselected, and the summary says why
    driver_xfail(name, reason=...)      under driver `name` the test fails for a known reason
                                        (a bug of that driver, named): xfail(strict=True)

Fixtures:
    octavia_source      session: the parsed --octavia-source (OctaviaSource)
    start_octavia_probe session: a function starting (once) and returning the session's
                        Octavia driver process, its venv made first if needed
    lb_driver_factory   module: a harness.drivers.factory.DriverFactory for the module's lab:
                        lb_driver_factory(lb, clients, vrrp_group=None, driver=None) -> driver
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.drivers.config_diff import ConfigDiffLog
from harness.drivers.factory import (
    DRIVER_NAMES,
    DriverFactory,
    OctaviaRuntime,
    amphora_open_files,
)
from harness.drivers.octavia_process import OctaviaProbe
from harness.drivers.octavia_venv import ensure_octavia_python
from harness.lab.lab import Lab
from harness.octavia_source import (
    DEFAULT_OCTAVIA_VERSION,
    OctaviaSource,
    OctaviaSourceError,
    parse_octavia_source,
)
from harness.pytest_markers import marker_choice, xfail_under
from harness.pytest_plugin import results_dir_of

DIFF_LOG = pytest.StashKey[ConfigDiffLog]()
DESELECTED = pytest.StashKey[list[str]]()
DIFF_REPORTS = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--driver", default="harness", choices=DRIVER_NAMES,
                    help="the controller that drives the suites' load balancers: ours "
                         "(harness, the default) or OpenStack Octavia's amphora driver (octavia)")
    group.addoption("--octavia-source", default=None, metavar="SOURCE",
                    help="the OpenStack Octavia to run: a PyPI version (default "
                         f"{DEFAULT_OCTAVIA_VERSION}), a source checkout directory (installed "
                         "editable) or an sdist/wheel file")
    group.addoption("--diff-configs", action="store_true",
                    help="write both drivers' haproxy.cfg for every push side by side to "
                         "results/diff-configs/<test id>.md")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "driver_specific(name, reason): only for that driver (harness|octavia); "
                   "deselected, with the reason, under the other")
    config.addinivalue_line(
        "markers", "driver_xfail(name, reason): fails under that driver for the reason given "
                   "(a known bug, named): xfail(strict=True) there")
    try:
        parse_octavia_source(config.getoption("--octavia-source"),
                             cwd=config.invocation_params.dir)
    except OctaviaSourceError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--diff-configs"):
        config.stash[DIFF_LOG] = ConfigDiffLog()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    driver = config.getoption("--driver")
    kept, dropped, reasons = [], [], []
    for item in items:
        specific = item.get_closest_marker("driver_specific")
        if specific is not None:
            name, reason = marker_choice(item, specific, DRIVER_NAMES, "a driver")
            if name != driver:
                dropped.append(item)
                reasons.append(f"{item.nodeid}: only for --driver {name}: {reason}")
                continue
        xfail_under(item, "driver_xfail", DRIVER_NAMES, driver, "a driver")
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config.stash[DESELECTED] = reasons
        junit = config.getoption("xmlpath", None)
        if junit:  # beside the JUnit report, which has no word for a deselected test
            deselected_report(Path(junit)).write_text(json.dumps(
                {item.nodeid: marker_choice(item, item.get_closest_marker("driver_specific"),
                                            DRIVER_NAMES, "a driver")[1]
                 for item in dropped}, indent=1))


def deselected_report(junit: Path) -> Path:
    """Where the tests deselected for the driver are listed (node id -> reason) when a run
    writes a JUnit report (`amphora-harness conformance` reads it)."""
    return junit.with_suffix(".deselected.json")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    log = item.config.stash.get(DIFF_LOG, None)
    if log is not None:
        log.current = item.nodeid
    yield
    if log is not None:
        written = log.write(item.nodeid, results_dir_of(item.config) / "diff-configs")
        if written:
            item.config.stash.setdefault(DIFF_REPORTS, []).append(str(written))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    deselected = config.stash.get(DESELECTED, [])
    if deselected:
        terminalreporter.section(f"deselected for --driver {config.getoption('--driver')}")
        for line in deselected:
            terminalreporter.write_line(line)
    reports = config.stash.get(DIFF_REPORTS, [])
    if reports:
        terminalreporter.write_line(f"amphora-harness: {len(reports)} config diffs in "
                                    f"{results_dir_of(config) / 'diff-configs'}")


@pytest.fixture(scope="session")
def octavia_source(request: pytest.FixtureRequest) -> OctaviaSource:
    return parse_octavia_source(request.config.getoption("--octavia-source"),
                                cwd=request.config.invocation_params.dir)


@pytest.fixture(scope="session")
def start_octavia_probe(octavia_source: OctaviaSource) -> Iterator[Callable[[], OctaviaProbe]]:
    started: list[OctaviaProbe] = []

    def start() -> OctaviaProbe:
        if not started:
            started.append(OctaviaProbe(ensure_octavia_python(octavia_source)))
        return started[0]

    yield start
    for probe in started:
        probe.close()


@pytest.fixture(scope="module")
def lb_driver_factory(request: pytest.FixtureRequest, lab: Lab,
                      start_octavia_probe: Callable[[], OctaviaProbe]
                      ) -> Iterator[DriverFactory]:
    octavia = OctaviaRuntime(
        probe=start_octavia_probe, credentials=lab.pki.driver,
        open_files_limit=lambda client: amphora_open_files(lab.provider, lab.amphorae, client))
    factory = DriverFactory(request.config.getoption("--driver"), octavia,
                            diff_log=request.config.stash.get(DIFF_LOG, None))
    yield factory
    factory.close()

