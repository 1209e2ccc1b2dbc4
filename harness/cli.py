"""The amphora-harness command: build images, collect leftovers.

Errors print as one readable line and exit non-zero; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from harness.images import RECIPES, ImageBuildError
from harness.providers.base import ProviderError

CONSOLE = Console(stderr=True)


class CommandError(Exception):
    """A command failed; its message is printed as is."""


def images_build(args: argparse.Namespace) -> None:
    from harness.providers.docker import DockerProvider

    unknown = set(args.names) - set(RECIPES)
    if unknown:
        raise CommandError(f"no such image: {', '.join(sorted(unknown))} "
                           f"(there are {', '.join(sorted(RECIPES))})")
    provider = DockerProvider()
    for name in args.names or sorted(RECIPES):
        started = time.monotonic()
        tag = provider.ensure_image(name)
        print(tag)
        CONSOLE.print(f"[green]{name}[/]: {tag} ready in {time.monotonic() - started:.1f}s")


def gc(args: argparse.Namespace) -> None:
    from harness.images import ImageBuilder
    from harness.lab import collect_leftovers
    from harness.providers.docker import DockerProvider

    provider = DockerProvider()
    removed = collect_leftovers(provider, everything=args.all)
    for lab_id in removed:
        print(f"removed lab {lab_id}")
    left = [lab.lab_id for lab in provider.labs()]
    if left:
        CONSOLE.print(f"labs of live processes left alone: {', '.join(left)} (--all removes them)")
    if args.images:
        builder = ImageBuilder(provider.client)
        for tag in builder.stale_images():
            if builder.remove_unused(tag):
                print(f"removed image {tag}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amphora-harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    images = commands.add_parser("images", help="the amphora and member images")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    build = images_commands.add_parser(
        "build", help="build the images whose inputs changed (unchanged inputs build nothing)")
    build.add_argument("names", nargs="*", metavar="NAME",
                       help=f"which images ({', '.join(sorted(RECIPES))}; default: all)")
    build.set_defaults(func=images_build)

    collect = commands.add_parser(
        "gc", help="remove labs left by runs that are gone (containers, networks)")
    collect.add_argument("--all", action="store_true",
                         help="also remove labs whose owner process is still running")
    collect.add_argument("--images", action="store_true",
                         help="also remove our images that no current input set produces")
    collect.set_defaults(func=gc)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CommandError, ImageBuildError, ProviderError) as exc:
        # markup=False: engine messages contain brackets that rich would read as markup.
        CONSOLE.print(f"amphora-harness: {exc}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        CONSOLE.print("[red]amphora-harness: interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
