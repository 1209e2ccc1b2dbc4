"""`amphora-harness images build`: the amphora and member images, built when their inputs
changed; with --agent octavia, the amphora image of Octavia's own agent from --octavia-source."""

from __future__ import annotations

import argparse
import time

from harness.cli.arguments import add_agent_options, add_command, octavia_source_of, provider_of
from harness.cli.console import CONSOLE, CommandError
from harness.lab.images import RECIPES
from harness.lab.octavia_agent import OCTAVIA
from harness.lab.octavia_image import NAME as OCTAVIA_IMAGE

NAMES = sorted([*RECIPES, OCTAVIA_IMAGE])


def images_build(args: argparse.Namespace) -> None:
    unknown = set(args.names) - set(NAMES)
    if unknown:
        raise CommandError(f"no such image: {', '.join(sorted(unknown))} "
                           f"(there are {', '.join(NAMES)})")
    provider = provider_of(args)
    default = ["amphora", "member"] if args.agent != OCTAVIA else [OCTAVIA_IMAGE, "member"]
    for name in args.names or default:
        started = time.monotonic()
        if name == OCTAVIA_IMAGE:
            tag = provider.ensure_octavia_image(octavia_source_of(args))
        else:
            tag = provider.ensure_image(name)
        print(tag)
        CONSOLE.print(f"[green]{name}[/]: {tag} ready in {time.monotonic() - started:.1f}s")


def register(commands: argparse._SubParsersAction) -> None:
    images = add_command(commands, "images", help="the amphora and member images")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    build = add_command(
        images_commands, "build",
        help="build the images whose inputs changed (unchanged inputs build nothing)")
    add_agent_options(build)
    build.add_argument("names", nargs="*", metavar="NAME",
                       help=f"which images ({', '.join(NAMES)}; default: amphora and member, "
                            f"or {OCTAVIA_IMAGE} and member with --agent octavia)")
    build.set_defaults(func=images_build)
