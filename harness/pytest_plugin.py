"""The amphora-harness pytest plugin: lab options and fixtures.

Options: --provider (where labs run), --keep-lab (leave labs running for inspection; remove them
later with `amphora-harness down --lab ID` or `gc --all`), --agent-image (boot amphorae from
this image instead of ours: scenarios talk to amphorae only through the Amphora API, traffic
and testinfra, so they run against any agent that honours the contract).

Fixtures (module-scoped unless noted; a module sizes its lab by overriding `lab_shape`):

    lab_provider    session: the provider; at session start it removes labs of dead runs
    lab_factory     makes labs (Lab objects, already up) and tears them down with the module
    lab             one lab
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

Node logs of every lab go to results/labs/<lab id>/ under the rootdir.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import testinfra

from harness.amphora_api.client import AmphoraClient
from harness.faults.injector import FaultInjector
from harness.lab.cleanup import collect_leftovers
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.lab.providers import PROVIDERS, make_provider
from harness.lab.providers.base import Node, Provider, ProviderError
from harness.lab.providers.netns_testinfra import register_backend as register_netns_backend
from harness.observe.heartbeats import HeartbeatReceiver

# The driver options and fixtures (--driver, --octavia-source) live in their own module.
pytest_plugins = ["harness.pytest_drivers"]

LAB_FIXTURES = {"lab_factory", "lab_provider"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--provider", default="docker", choices=PROVIDERS,
                    help="where lab amphorae run (default: docker)")
    group.addoption("--keep-lab", action="store_true",
                    help="leave the lab running after the tests, for inspection")
    group.addoption("--agent-image", default=None,
                    help="run scenarios against this amphora image instead of the one we build")


def pytest_configure(config: pytest.Config) -> None:
    # amphora_host (and the suites' own testinfra hosts) ask for netns://<node> on netns labs.
    register_netns_backend()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a lab carries the `lab` marker (`-m "not lab"` skips them)."""
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


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
def lab_provider(request: pytest.FixtureRequest) -> Provider:
    try:
        provider = make_provider(request.config.getoption("--provider"))
        removed = collect_leftovers(provider, include_kept=False)
    except ProviderError as exc:
        pytest.fail(str(exc), pytrace=False)
    if removed:
        _say(request.config, f"amphora-harness: removed labs of dead runs: {', '.join(removed)}")
    return provider


@pytest.fixture(scope="session")
def lab_results_dir(request: pytest.FixtureRequest) -> Path:
    return request.config.rootpath / "results" / "labs"


@pytest.fixture(scope="module")
def lab_factory(
    request: pytest.FixtureRequest, lab_provider: Provider, lab_results_dir: Path
) -> Iterator[Callable[[], Lab]]:
    keep = request.config.getoption("--keep-lab")
    labs: list[Lab] = []

    def make() -> Lab:
        lab = Lab(
            lab_provider,
            amphora_image=request.config.getoption("--agent-image"),
            keep=keep,
            results_dir=lab_results_dir,
        )
        labs.append(lab)
        return lab.up()

    yield make
    for lab in labs:
        lab.down()
        if keep:
            _say(request.config, f"amphora-harness: kept lab {lab.id} (PKI in {lab.workdir}); "
                 f"remove it with `amphora-harness down --lab {lab.id}`")


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Lab:
    return lab_factory()


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
    with HeartbeatReceiver(secrets.token_hex(16), host=str(lab.gateway("lb-mgmt"))) as receiver:
        yield receiver
