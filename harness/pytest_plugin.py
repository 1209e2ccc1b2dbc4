"""The amphora-harness pytest plugin: lab options, markers, fixtures, failure bundles.

Options:
    --provider docker|netns   where labs run
    --keep-lab                leave labs running for inspection (remove them later with
                              `amphora-harness down --lab ID` or `gc --all`)
    --agent-image IMAGE       boot amphorae from this image instead of ours: scenarios talk to
                              amphorae only through the Amphora API, traffic and testinfra, so
                              they run against any agent that honours the contract
    --lab ID                  run against the lab `amphora-harness up` brought up: no lab is
                              built and nothing is torn down (harness.lab.attach)
    --results-dir DIR         where results go (default: $AMPHORA_HARNESS_RESULTS_DIR, else
                              ./results from where pytest was started)
    --timeout-factor F        scale every lab wait, and the lab tests' default time limit, by F

Markers (registered here, so projects running with --strict-markers may use them): lab (added to
every test that uses a lab; `-m "not lab"` skips them), netns, one per shipped suite (smoke,
config_push, failover, stats: added to the tests of scenarios/<suite>), and the driver markers
of harness.pytest_drivers. A lab test without a time limit of its own or of the run's gets
LAB_TEST_TIMEOUT_S (pytest-timeout), scaled by the timeout factor.

Failure bundles: when a test that used a lab fails, what explains it is collected from the live
lab into <results>/failures/<test id>/ (harness.observe.bundle); the lab id and image tags are
test properties (JUnit <properties>) and a report section, and the summary names the bundle.

SIGTERM (a CI system cancelling the run) ends the session as Ctrl-C does: the running test
stops, every fixture is torn down (labs included), and pytest exits with 143.

Fixtures (module-scoped unless noted; a module sizes its lab by overriding `lab_shape`):

    lab_provider    session: the provider; at session start it removes labs of dead runs
    lab_factory     makes labs (Lab objects, already up) and tears them down with the module
    lab             one lab (with --lab: the standing lab, lent)
    amphorae        lab_shape.amphorae booted amphorae, agents answering
    amphora         the first of them
    amphora_client  its driver client (harness.amphora_api.client.AmphoraClient)
    amphora_host    a pytest-testinfra host inside it (processes, sockets, files)
    members         lab_shape.members booted members (harness.lab.member_server)
    vip_client      a node on the VIP network: a tenant's client VM
    heartbeats      the controller's heartbeat receiver on the lab's lb-mgmt gateway, trusting
                    a fresh key; a module points its amphorae at it with lab_shape's
                    agent_settings=heartbeats.agent_settings(interval_s)
    faults          function: a FaultInjector for the lab; heals what a test left active
    results_dir     session: the results directory

Node logs of every lab go to <results>/labs/<lab id>/.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import testinfra

from harness.amphora_api.client import AmphoraClient
from harness.faults.injector import FaultInjector
from harness.lab.attach import AttachedLab
from harness.lab.cleanup import collect_leftovers
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.lab.providers import PROVIDERS, make_provider
from harness.lab.providers.base import Node, Provider, ProviderError
from harness.lab.providers.docker_testinfra import DockerApiBackend
from harness.lab.providers.netns_testinfra import NetnsBackend
from harness.lab.standing_state import StandingLabError, load_record
from harness.observe.bundle import bundle_name, collect_bundle, lab_summary
from harness.observe.heartbeats import HeartbeatReceiver
from harness.observe.traffic import recorders_active_since
from harness.octavia_source import parse_octavia_source
from harness.paths import SCENARIOS_DIR, default_results_dir
from harness.polling import parse_timeout_factor, scaled, set_timeout_factor

# The driver options and fixtures (--driver, --octavia-source) live in their own module, and so
# do the options and hooks of runs spread over workers and engines (--docker-host, xdist), and
# the choice of agent (--agent).
pytest_plugins = ["harness.pytest_drivers", "harness.pytest_distributed",
                  "harness.pytest_agents"]

LAB_FIXTURES = {"lab_factory", "lab_provider"}
LAB_TEST_TIMEOUT_S = 300.0
MARKERS = {
    "lab": "uses a lab (added by amphora-harness to every test that does)",
    "netns": "needs root and iproute2 to create network namespaces",
}
SUITES = tuple(sorted(p.name for p in SCENARIOS_DIR.iterdir()
                      if p.is_dir() and any(p.glob("test_*.py"))))
TERMINATED_EXIT = 128 + signal.SIGTERM


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--provider", default="docker", choices=PROVIDERS,
                    help="where lab amphorae run (default: docker)")
    group.addoption("--keep-lab", action="store_true",
                    help="leave the lab running after the tests, for inspection")
    group.addoption("--agent-image", default=None,
                    help="run scenarios against this amphora image instead of the one we build")
    group.addoption("--lab", default=None, metavar="ID", dest="standing_lab",
                    help="run against the lab `amphora-harness up` brought up (nothing is "
                         "built or torn down)")
    group.addoption("--results-dir", default=None, type=Path, metavar="DIR",
                    help="where results go (default: $AMPHORA_HARNESS_RESULTS_DIR, else "
                         "./results)")
    group.addoption("--timeout-factor", default=None, metavar="F",
                    help="scale every lab wait (and lab tests' default time limit) by F, for "
                         "slow runners (default: $AMPHORA_HARNESS_TIMEOUT_FACTOR, else 1)")


# Set at configure time; read by hooks and fixtures.
RESULTS_DIR = pytest.StashKey[Path]()
LIVE_LABS = pytest.StashKey[list]()  # the labs up right now (Lab or AttachedLab)
TEST_STARTED = pytest.StashKey[float]()
PREVIOUS_SIGTERM = pytest.StashKey[object]()
TERMINATED = pytest.StashKey[bool]()


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken as pytest takes Ctrl-C: stop, tear everything down, report."""


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    for suite in SUITES:
        config.addinivalue_line("markers", f"{suite}: a test of the shipped {suite} suite")
    factor = config.getoption("--timeout-factor")
    if factor is not None:
        try:
            set_timeout_factor(parse_timeout_factor(factor))
        except ValueError as exc:
            raise pytest.UsageError(f"--timeout-factor: {exc}") from None
    results = config.getoption("--results-dir")
    config.stash[RESULTS_DIR] = (results.absolute() if results is not None
                                 else default_results_dir(config.invocation_params.dir))
    config.stash[LIVE_LABS] = []
    _terminate_like_ctrl_c(config)
    # amphora_host (and the suites' own testinfra hosts) ask for netns://<node> on netns labs,
    # docker-api://<container> on docker ones.
    NetnsBackend.register()
    DockerApiBackend.register()


def _terminate_like_ctrl_c(config: pytest.Config) -> None:
    """SIGTERM by default kills pytest on the spot (labs left behind); a handler raising
    SystemExit would fail only the running test and go on with the next. Another handler
    someone installed is left alone."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return

    def terminate(_signum, _frame) -> None:
        if config.stash.get(TERMINATED, False):
            return  # already stopping: let the teardown finish
        config.stash[TERMINATED] = True
        raise Terminated("SIGTERM: stopping, tearing labs down")

    # Not in the main thread (pytest run inside another program): no handler there.
    with contextlib.suppress(ValueError):
        config.stash[PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, terminate)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(TERMINATED, False):
        session.exitstatus = TERMINATED_EXIT


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(PREVIOUS_SIGTERM, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses a lab carries the `lab` marker and a time limit; every test of a
    shipped suite carries the suite's marker."""
    # pytest-timeout may be turned off (-p no:timeout): then there is no limit to give.
    give_limit = config.pluginmanager.hasplugin("timeout") and \
        config.getoption("timeout", None) is None and not config.getini("timeout")
    for item in items:
        if uses_lab(item):
            item.add_marker(pytest.mark.lab)
            if give_limit and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(scaled(LAB_TEST_TIMEOUT_S)))
        suite = _suite_of(Path(str(item.path)))
        if suite is not None:
            item.add_marker(suite)


def uses_lab(item: pytest.Item) -> bool:
    return bool(LAB_FIXTURES & set(getattr(item, "fixturenames", ())))


def _suite_of(path: Path) -> str | None:
    try:
        relative = path.resolve().relative_to(SCENARIOS_DIR)
    except ValueError:
        return None
    return relative.parts[0] if len(relative.parts) > 1 and relative.parts[0] in SUITES \
        else None


# --- failure bundles and the lab in the report --------------------------------------------------


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[TEST_STARTED] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    labs = list(item.config.stash.get(LIVE_LABS, [])) if uses_lab(item) else []
    if not labs:
        return report
    if report.when == "setup":
        for lab in labs:
            summary = lab_summary(lab)
            item.user_properties.append(("amphora-harness.lab", summary.id))
            item.user_properties.append(("amphora-harness.provider", summary.provider))
            for name, image in summary.images.items():
                item.user_properties.append((f"amphora-harness.image.{name}", image))
    if report.failed:
        _bundle(item, report, labs)
    return report


def _bundle(item: pytest.Item, report: pytest.TestReport, labs: list) -> None:
    directory = results_dir_of(item.config) / "failures" / bundle_name(item.nodeid)
    started = item.config.stash.get(TEST_STARTED, time.monotonic())
    try:
        path = collect_bundle(directory, item.nodeid, labs, recorders_active_since(started))
    except Exception as exc:  # a failed bundle must not hide the failure it is about
        path, problem = None, f"no failure bundle: {type(exc).__name__}: {exc}"
    else:
        problem = None
    lines = []
    for lab in labs:
        summary = lab_summary(lab)
        images = ", ".join(sorted(set(summary.images.values()))) or "no amphora"
        lines.append(f"lab {summary.id} ({summary.provider}), images: {images}")
    lines.append(problem or f"failure bundle: {path}")
    report.sections.append(("amphora-harness", "\n".join(lines)))
    _say(item.config, f"amphora-harness: {item.nodeid} ({report.when}) failed: "
                      f"{problem or f'bundle in {path}'}")


def results_dir_of(config: pytest.Config) -> Path:
    """The session's results directory (--results-dir, $AMPHORA_HARNESS_RESULTS_DIR, ./results)."""
    return config.stash[RESULTS_DIR]


@dataclass(frozen=True)
class LabShape:
    """How many amphorae and members a module's lab boots, and agent settings for the
    amphorae (harness.lab.agent_config.AgentSettings fields, e.g. topology, controllers)."""

    amphorae: int = 1
    members: int = 2
    agent_settings: dict = field(default_factory=dict)


# Notes for the end of the run: written from fixtures, output capture would swallow them.
NOTES = pytest.StashKey[list[str]]()


def _say(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(NOTES, []).append(line)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    for line in config.stash.get(NOTES, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def results_dir(request: pytest.FixtureRequest) -> Path:
    return results_dir_of(request.config)


@pytest.fixture(scope="session")
def lab_provider(request: pytest.FixtureRequest, docker_host: str | None) -> Provider:
    try:
        provider = make_provider(request.config.getoption("--provider"), docker_host=docker_host)
        removed = collect_leftovers(provider, include_kept=False)
    except ProviderError as exc:
        pytest.fail(str(exc), pytrace=False)
    if removed:
        _say(request.config, f"amphora-harness: removed labs of dead runs: {', '.join(removed)}")
    return provider


@pytest.fixture(scope="session")
def lab_results_dir(results_dir: Path) -> Path:
    return results_dir / "labs"


@pytest.fixture(scope="module")
def lab_factory(
    request: pytest.FixtureRequest, lab_provider: Provider, lab_results_dir: Path
) -> Iterator[Callable[[], Lab]]:
    keep = request.config.getoption("--keep-lab")
    live = request.config.stash[LIVE_LABS]
    labs: list[Lab] = []

    def make() -> Lab:
        lab = Lab(
            lab_provider,
            amphora_image=request.config.getoption("--agent-image"),
            keep=keep,
            results_dir=lab_results_dir,
            agent=request.config.getoption("--agent"),
            octavia_source=parse_octavia_source(request.config.getoption("--octavia-source"),
                                                cwd=request.config.invocation_params.dir),
        )
        labs.append(lab)
        lab.up()
        live.append(lab)
        return lab

    yield make
    for lab in labs:
        if lab in live:
            live.remove(lab)
        lab.down()
        if keep:
            _say(request.config, f"amphora-harness: kept lab {lab.id} (PKI in {lab.workdir}); "
                 f"remove it with `amphora-harness down --lab {lab.id}`")


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, lab_factory: Callable[[], Lab],
        lab_results_dir: Path) -> Iterator[Lab]:
    """The module's lab; with --lab ID the standing lab, lent (harness.lab.attach)."""
    lab_id = request.config.getoption("standing_lab")
    if lab_id is None:
        yield lab_factory()
        return
    try:
        record = load_record(lab_id)
        if record.agent != request.config.getoption("--agent"):
            # agent_xfail markers follow --agent: they must name the agent the lab runs.
            pytest.fail(f"lab {lab_id} runs the {record.agent} agent (`amphora-harness up "
                        f"--agent {record.agent}`): run pytest with --agent {record.agent}",
                        pytrace=False)
        attached = AttachedLab(record, make_provider(record.provider),
                               results_dir=lab_results_dir).up()
    except (StandingLabError, ProviderError) as exc:
        pytest.fail(str(exc), pytrace=False)
    live = request.config.stash[LIVE_LABS]
    live.append(attached)
    yield attached
    live.remove(attached)
    attached.down()


@pytest.fixture(scope="module")
def lab_shape() -> LabShape:
    return LabShape()


@pytest.fixture(scope="module")
def amphorae(lab: Lab, lab_shape: LabShape) -> list[LabAmphora]:
    return lab.add_amphorae(lab_shape.amphorae, **lab_shape.agent_settings)


@pytest.fixture(scope="module")
def amphora(amphorae: list[LabAmphora]) -> LabAmphora:
    return amphorae[0]


@pytest.fixture(scope="module")
def amphora_client(amphora: LabAmphora) -> AmphoraClient:
    return amphora.client


@pytest.fixture(scope="module")
def amphora_host(lab: Lab, amphora: LabAmphora) -> testinfra.host.Host:
    return testinfra.get_host(lab.provider.testinfra_backend(amphora.node))


@pytest.fixture(scope="module")
def members(lab: Lab, lab_shape: LabShape) -> list[LabMember]:
    return lab.add_members(lab_shape.members)


@pytest.fixture(scope="module")
def vip_client(lab: Lab) -> Node:
    return lab.add_client()


@pytest.fixture
def faults(lab: Lab) -> Iterator[FaultInjector]:
    """Faults for the module's lab (harness.faults.injector). Whatever a test leaves active is
    healed
    when it ends, also when it fails; a heal that fails is a teardown error."""
    injector = FaultInjector(lab)
    yield injector
    errors = injector.heal_all()
    if errors:
        pytest.fail(f"faults left unhealed: {'; '.join(errors)}", pytrace=False)


@pytest.fixture(scope="module")
def heartbeats(lab: Lab) -> Iterator[HeartbeatReceiver]:
    with HeartbeatReceiver(secrets.token_hex(16),
                           datagrams=lab.controller_datagrams()) as receiver:
        yield receiver
