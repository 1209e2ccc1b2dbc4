"""`amphora-harness engine up NAME | down NAME`: a second Docker Engine on this machine that the
host reaches only through its API socket, as it would a remote one (harness.lab.engine_netns).

    URL=$(amphora-harness engine up remote1 --copy-images)
    python3 -m pytest scenarios/smoke --docker-host "$URL"
    amphora-harness engine down remote1

`up` prints the engine's URL on stdout and returns; dockerd keeps running in the background
(its log: /var/lib/amphora-harness/engines/NAME/dockerd.log) until `down`.
"""

from __future__ import annotations

import argparse
import os
from contextlib import closing

import docker

from harness.cli.arguments import add_command
from harness.cli.console import CONSOLE, CommandError
from harness.lab.engine_netns import EngineError, NetnsEngine
from harness.lab.image_copy import copy_image
from harness.lab.images import RECIPES, ImageBuilder

# What `images build` makes by default: a lab with our agent needs no more.
DEFAULT_COPIES = ("amphora", "member")


def _source_client(args: argparse.Namespace) -> docker.DockerClient:
    """The engine images are copied from: the first --docker-host, else $DOCKER_HOST, else the
    local socket."""
    environment = dict(os.environ)
    if args.docker_hosts:
        environment["DOCKER_HOST"] = args.docker_hosts[0]
    return docker.from_env(environment=environment)


def _tags_to_copy(source: docker.DockerClient, args: argparse.Namespace) -> list[str]:
    """The base and top tags of the default images (built on the source first if missing:
    the base too, so that the target can rebuild a top layer without mmdebstrap), and the
    tags --copy-image names."""
    tags = []
    if args.copy_images:
        builder = ImageBuilder(source, CONSOLE)
        for name in DEFAULT_COPIES:
            top = builder.ensure(name)
            base = RECIPES[name].base_tag()
            tags += [base, top] if builder.exists(base) else [top]
    return tags + args.copy_image


def engine_up(args: argparse.Namespace) -> None:
    engine = NetnsEngine(args.name)
    try:
        url = engine.start(timeout_s=args.start_timeout)
        CONSOLE.print(f"[green]engine {args.name}[/]: up at {url} "
                      f"(netns {engine.paths.netns}, log {engine.paths.log_file})")
        if args.copy_images or args.copy_image:
            with closing(_source_client(args)) as source, closing(engine.client(600)) as target:
                for tag in _tags_to_copy(source, args):
                    copy_image(source, target, tag, report=CONSOLE.print)
    except EngineError as exc:
        raise CommandError(str(exc)) from None
    except BaseException:
        # A half-provisioned engine is not left behind: `up` either works or leaves nothing.
        engine.stop()
        raise
    print(url)


def engine_down(args: argparse.Namespace) -> None:
    try:
        NetnsEngine(args.name).stop(timeout_s=args.stop_timeout)
    except EngineError as exc:
        raise CommandError(str(exc)) from None
    CONSOLE.print(f"[green]engine {args.name}[/]: down")


def register(commands: argparse._SubParsersAction) -> None:
    engine = add_command(
        commands, "engine",
        help="a second Docker Engine in its own network namespace (a stand-in remote engine)")
    engine_commands = engine.add_subparsers(dest="engine_command", required=True)
    up = add_command(
        engine_commands, "up", help="start it and print its URL (it keeps running)",
        description="Start dockerd in a network namespace of its own and print its unix:// "
        "URL once it answers. The host reaches it only through that socket. An engine of that "
        "name that is running is an error; leftovers of a dead one are removed first.")
    up.add_argument("name", metavar="NAME", help="the engine's name (a-z, 0-9, '-'; ≤ 20)")
    up.add_argument("--copy-images", action="store_true",
                    help="copy the amphora and member images (and their bases) from the "
                    "local engine (--docker-host, else $DOCKER_HOST, else the local socket), "
                    "built there first if missing")
    up.add_argument("--copy-image", action="append", default=[], metavar="TAG",
                    help="copy this image too (repeatable), e.g. Octavia's amphora image")
    up.add_argument("--start-timeout", type=float, default=60.0, metavar="S",
                    help="how long dockerd may take to answer (default 60)")
    up.set_defaults(func=engine_up)
    down = add_command(
        engine_commands, "down", help="stop it and remove everything it had",
        description="Remove the engine's containers, stop its dockerd, delete its network "
        "namespace and its data and run directories. An engine that is not there is no error.")
    down.add_argument("name", metavar="NAME")
    down.add_argument("--stop-timeout", type=float, default=30.0, metavar="S",
                      help="how long dockerd may take to exit on SIGTERM before SIGKILL")
    down.set_defaults(func=engine_down)

