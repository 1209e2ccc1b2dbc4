"""The amphora-harness command: images, standing labs, traffic, faults, suites, the bench.

    amphora-harness images build         build the images whose inputs changed
    amphora-harness up [TOPOLOGY]        bring a lab up and leave it running (see harness.lab.shape)
    amphora-harness status | shell AMP | logs NODE | push LB-FILE | traffic
    amphora-harness fault KIND [AMP...] | heal
    amphora-harness down                 remove the lab
    amphora-harness run [SUITE...]       scenario suites, then a results table (--shard I/K)
    amphora-harness merge RUN_DIR...     the shards' reports joined into one table
    amphora-harness bench [--quick]      performance metrics into results/bench/
    amphora-harness gc                   remove what runs that are gone left behind
    amphora-harness engine up|down NAME  a second Docker Engine in its own netns (prints its URL)

--provider, --docker-host, --results-dir and --timeout-factor go before or after the command
(the provider's default: $AMPHORA_HARNESS_PROVIDER, else docker). Errors print as one readable
line and exit non-zero (1; 3 when the bench finds a regression; 130 on Ctrl-C and 143 on
SIGTERM, after the labs the command was building are torn down); progress goes to stderr,
results to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from datetime import UTC, datetime

from harness.cli import (
    bench,
    conformance,
    console,
    engine,
    faults,
    images,
    lab,
    merge,
    push,
    suites,
)
from harness.cli.arguments import fill_defaults, shared_options
from harness.cli.console import CONSOLE, CommandError
from harness.cli.signals import Terminated, sigterm_exits_through_finally
from harness.distribution import package_version

DEBUG_ENV = "AMPHORA_HARNESS_DEBUG"
# Each registers its commands; this order is the order of `--help`.
COMMAND_GROUPS = (images, lab, push, faults, suites, conformance, merge, bench, engine)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amphora-harness", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]), parents=[shared_options()])
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Arguments after `--` go to pytest (for `run`)."""
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    fill_defaults(args, parser)
    if extra:
        if args.command not in ("run", "conformance"):
            parser.error("arguments after -- are for `run` and `conformance` only")
        args.pytest_args = extra
    return args


def error_line(exc: BaseException) -> str:
    """One readable line: the message's first line, the rest saved to a file named there."""
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    if rest.strip():
        log = console.RESULTS_DIR / "cli-errors" / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text + "\n")
            first += f" (more in {log})"
        except OSError:
            pass
    return first


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_exits_through_finally():
            args.func(args)
    except KeyboardInterrupt:
        CONSOLE.print("amphora-harness: interrupted", style="red")
        return 130
    except Terminated as exc:
        CONSOLE.print("amphora-harness: terminated", style="red")
        return exc.code
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        known = isinstance(exc, CommandError | OSError) or \
            type(exc).__module__.startswith(("harness", "amphora_agent"))
        prefix = "" if known else f"{type(exc).__name__}: "
        # markup=False: engine messages contain brackets that rich would read as markup.
        CONSOLE.print(f"amphora-harness: {prefix}{error_line(exc)}", style="red", markup=False,
                      highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
