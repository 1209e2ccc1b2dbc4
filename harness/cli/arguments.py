"""What every command shares from its arguments: --provider and the provider it names,
--results-dir, --timeout-factor, --lab and the standing lab it names.

The shared options sit in a parent parser given to the top-level parser and to every command's
parser, so `amphora-harness --provider netns up` and `amphora-harness up --provider netns` mean
the same (given both, the later wins). Their defaults are suppressed in the parsers, because a
command's parser would otherwise overwrite a value given before the command with its default;
fill_defaults puts them in after parsing. --agent and --octavia-source (add_agent_options) belong
to the commands that boot amphorae (images build, up, run) and name the amphora image.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.cli import console
from harness.drivers.factory import DRIVER_NAMES
from harness.lab.octavia_agent import AGENTS, OCTAVIA
from harness.lab.providers import PROVIDERS, make_provider
from harness.lab.providers.base import Provider
from harness.lab.standing import StandingLab
from harness.lab.standing_state import choose_lab
from harness.octavia_source import (
    DEFAULT_OCTAVIA_VERSION,
    OctaviaSource,
    OctaviaSourceError,
    parse_octavia_source,
)
from harness.paths import RESULTS_DIR_ENV, default_results_dir
from harness.polling import TIMEOUT_FACTOR_ENV, parse_timeout_factor, set_timeout_factor

PROVIDER_ENV = "AMPHORA_HARNESS_PROVIDER"
DEFAULT_PROVIDER = "docker"


def shared_options() -> argparse.ArgumentParser:
    """The parent parser of the top-level parser and of every command's parser."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--provider", choices=PROVIDERS, default=argparse.SUPPRESS,
        help=f"where labs run (default: ${PROVIDER_ENV}, else {DEFAULT_PROVIDER}); "
        "commands on a lab from `up` use the provider it runs on")
    parser.add_argument(
        "--results-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
        help=f"where results go (default: ${RESULTS_DIR_ENV}, else ./results)")
    parser.add_argument(
        "--docker-host", action="append", dest="docker_hosts", metavar="URL",
        default=argparse.SUPPRESS,
        help="a Docker Engine for labs (DOCKER_HOST syntax), repeatable; `run` spreads its "
        "pytest workers (-- -n N) over them (default: $DOCKER_HOST, else the local socket)")
    parser.add_argument(
        "--timeout-factor", type=timeout_factor, metavar="F", default=argparse.SUPPRESS,
        help=f"scale every lab wait by F, for slow runners (default: ${TIMEOUT_FACTOR_ENV}, "
        "else 1)")
    return parser


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    """--agent and --octavia-source, for the commands that boot amphorae (`bench measure` has
    its own --agent: a list to compare)."""
    parser.add_argument(
        "--agent", choices=AGENTS, default="ours",
        help="which amphora-agent amphorae run: ours (default) or OpenStack Octavia's own "
        "(octavia; built from --octavia-source; docker provider only)")
    add_octavia_source_option(parser)


def add_octavia_source_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--octavia-source", metavar="SOURCE", default=None,
        help=f"the OpenStack Octavia to run: a PyPI version (default {DEFAULT_OCTAVIA_VERSION}), "
        "a source checkout directory or an sdist/wheel file")


def add_driver_option(parser: argparse.ArgumentParser) -> None:
    """--driver: which controller drives load balancers (harness.drivers.factory)."""
    parser.add_argument(
        "--driver", choices=DRIVER_NAMES, default="harness",
        help="the controller that drives the load balancer: ours (harness, default) or "
        "OpenStack Octavia's amphora driver (octavia; from --octavia-source)")


def timeout_factor(text: str) -> float:
    try:
        return parse_timeout_factor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_command(commands: argparse._SubParsersAction, name: str,
                **kwargs) -> argparse.ArgumentParser:
    """A command's parser, with the shared options."""
    return commands.add_parser(name, parents=[shared_options()], **kwargs)


def fill_defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The shared options' defaults, for those given neither before nor after the command."""
    if "provider" not in args:
        name = os.environ.get(PROVIDER_ENV) or DEFAULT_PROVIDER
        if name not in PROVIDERS:
            parser.error(f"{PROVIDER_ENV}={name!r} names no provider "
                         f"(there are {', '.join(PROVIDERS)})")
        args.provider = name
    if "docker_hosts" not in args:
        args.docker_hosts = []
    if "results_dir" not in args:
        args.results_dir = default_results_dir()
    args.results_dir = args.results_dir.absolute()
    console.RESULTS_DIR = args.results_dir
    if getattr(args, "agent", None) == OCTAVIA and args.provider != "docker":
        parser.error(f"--agent octavia runs on the docker provider only, not {args.provider} "
                     "(Octavia's agent needs systemd as PID 1 in a container)")
    if "timeout_factor" in args:
        set_timeout_factor(args.timeout_factor)
    else:
        try:
            args.timeout_factor = parse_timeout_factor(os.environ.get(TIMEOUT_FACTOR_ENV) or "1")
        except ValueError as exc:
            parser.error(f"{TIMEOUT_FACTOR_ENV}: {exc}")


def lab_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lab", metavar="ID", help="which lab (default: the only one up)")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def provider_of(args: argparse.Namespace) -> Provider:
    """The provider --provider names, on the first --docker-host (for a docker provider)."""
    return make_provider(args.provider, docker_host=next(iter(args.docker_hosts), None))


def octavia_source_of(args: argparse.Namespace) -> OctaviaSource:
    try:
        return parse_octavia_source(args.octavia_source)
    except OctaviaSourceError as exc:
        raise console.CommandError(str(exc)) from None


def amphora_image_of(provider: Provider, args: argparse.Namespace) -> str:
    """The amphora image --agent (and --octavia-source) name, built first if missing."""
    if args.agent == OCTAVIA:
        return provider.ensure_octavia_image(octavia_source_of(args))
    return provider.ensure_image("amphora")


def agent_pytest_args(args: argparse.Namespace) -> list[str]:
    """The same choice of agent, for a pytest run of the suites."""
    source = [f"--octavia-source={args.octavia_source}"] if args.octavia_source else []
    return [f"--agent={args.agent}", *source]


@contextmanager
def chosen_lab(args: argparse.Namespace) -> Iterator[StandingLab]:
    """The standing lab --lab names (or the only one up), on the provider it runs on."""
    record = choose_lab(args.lab)
    with StandingLab(record, make_provider(record.provider)) as standing:
        yield standing
