"""`amphora-harness images build`: the amphora and member images, built when their inputs
changed."""

from __future__ import annotations

import argparse
import time

from harness.cli.arguments import add_command, provider_of
from harness.cli.console import CONSOLE, CommandError
from harness.lab.images import RECIPES


def images_build(args: argparse.Namespace) -> None:
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        raise CommandError(f"no such image: {', '.join(sorted(unknown))} "
                           f"(there are {', '.join(sorted(RECIPES))})")
    provider = provider_of(args)
    for name in args.names or sorted(RECIPES):
        started = time.monotonic()
        tag = provider.ensure_image(name)
        print(tag)
        CONSOLE.print(f"[green]{name}[/]: {tag} ready in {time.monotonic() - started:.1f}s")


def register(commands: argparse._SubParsersAction) -> None:
    images = add_command(commands, "images", help="the amphora and member images")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    build = add_command(
        images_commands, "build",
        help="build the images whose inputs changed (unchanged inputs build nothing)")
    build.add_argument("names", nargs="*", metavar="NAME",
                       help=f"which images ({', '.join(sorted(RECIPES))}; default: all)")
    build.set_defaults(func=images_build)
