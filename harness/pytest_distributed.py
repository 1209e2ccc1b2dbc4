"""Runs spread over processes and engines: pytest-xdist workers and --docker-host.

    --docker-host URL   a Docker Engine for labs (DOCKER_HOST syntax: unix://, tcp://, ssh://),
                        repeatable; worker gw<i> of `pytest -n N` makes its labs on engine
                        i mod (number of engines). Without it: the environment's engine
                        ($DOCKER_HOST, else the local socket). An engine whose
                        labs this host has no route to (another machine, a network
                        namespace) is reached through its API alone (harness.lab.reach).

Each worker is a process of its own: its labs carry its owner and take a free address block
of their own (a block another worker took meanwhile is refused by the engine, and the lab takes
the next one), so workers never share a lab. `--dist loadscope` keeps a module's tests on one
worker, so the module's lab is made once; with the default `--dist load` a module's tests are
spread and every worker that gets one makes its own lab for that module.

Notes meant for the end of the run (kept labs, removed leftovers) are written by the worker
that made them; they travel to the controller in xdist's workeroutput and are printed in its
terminal summary.
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin import NOTES

WORKER_NOTES = "amphora_harness_notes"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--docker-host", action="append", default=[], metavar="URL",
                    dest="docker_hosts",
                    help="a Docker Engine for labs (DOCKER_HOST syntax), repeatable: workers "
                         "of -n N are spread over them round-robin")


@pytest.fixture(scope="session")
def docker_host(request: pytest.FixtureRequest) -> str | None:
    """The engine this process makes its labs on (None: the environment's)."""
    return docker_host_of(request.config)


def docker_host_of(config: pytest.Config) -> str | None:
    hosts: list[str] = config.getoption("docker_hosts")
    if not hosts:
        return None
    return hosts[worker_number(config) % len(hosts)]


def worker_number(config: pytest.Config) -> int:
    """i of xdist's worker gw<i>; 0 for a run without workers (and for the controller)."""
    worker_id = getattr(config, "workerinput", {}).get("workerid", "gw0")
    return int(worker_id.removeprefix("gw"))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a worker, after every fixture is torn down: hand the notes to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_NOTES] = list(session.config.stash.get(NOTES, []))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the controller (xdist's hook, absent without xdist): a worker ended."""
    notes = getattr(node, "workeroutput", {}).get(WORKER_NOTES, [])
    node.config.stash.setdefault(NOTES, []).extend(notes)
