"""`amphora-harness run`: scenario suites, each in a pytest child with a JUnit report, then a
results table read from the reports.

The suites run from where the package keeps them (harness.paths.SCENARIOS_DIR), from the current
directory, with their own pytest configuration (scenarios/suites.ini: a project around an
installed package must not lend them its own); results, reports and pytest's cache go under the
current directory. SIGINT and SIGTERM are passed on to the running suite, which tears its labs
down; then the command stops.
"""

from __future__ import annotations

import argparse
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from harness.cli import console
from harness.cli.arguments import (
    add_agent_options,
    add_command,
    add_driver_option,
    agent_pytest_args,
    amphora_image_of,
)
from harness.cli.console import CONSOLE, OUT, CommandError, step
from harness.cli.signals import run_forwarding_signals
from harness.lab.providers import make_provider
from harness.paths import SCENARIOS_DIR
from harness.polling import timeout_factor

CORE_SUITES = ("smoke", "config_push", "failover", "stats")
SUITES_INI = SCENARIOS_DIR / "suites.ini"
# Recorded durations of the suites' tests (pytest-split's format: node id -> seconds), which
# balance the shards of `run --shard I/K`. Refresh with
#   python3 -m pytest scenarios/<suite>... --store-durations --durations-path <this file>
TEST_DURATIONS = SCENARIOS_DIR / "test_durations.json"


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based, as pytest-split's --group counts)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def pytest_args(self) -> list[str]:
        # duration_based_chunks cuts the suite's tests, in their order, into consecutive runs
        # of about equal recorded time: a module's tests mostly stay together, and a module's
        # lab is made by one shard only.
        return [f"--splits={self.count}", f"--group={self.index}",
                f"--durations-path={TEST_DURATIONS}",
                "--splitting-algorithm=duration_based_chunks"]


def shard(text: str) -> Shard:
    """I/K on the command line: 1 <= I <= K."""
    index, slash, count = text.partition("/")
    try:
        parsed = Shard(int(index), int(count))
    except ValueError:
        parsed = None
    if not slash or parsed is None or not 1 <= parsed.index <= parsed.count:
        raise argparse.ArgumentTypeError(f"{text!r} is no shard: give I/K with 1 <= I <= K, "
                                         "e.g. 2/4")
    return parsed


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    tests: int
    passed: int
    failed: int
    skipped: int
    duration_s: float
    exit_code: int
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        # pytest exits 5 when a suite collects nothing; that is no failure.
        return self.failed == 0 and self.exit_code in (0, 5)


def parse_junit(path: Path, suite: str, exit_code: int, duration_s: float) -> SuiteResult:
    """Totals of a JUnit XML file (pytest's), and the names of the failing tests."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        # No report: pytest did not get as far as writing one (a usage or collection error).
        return SuiteResult(suite, 0, 0, 1, 0, duration_s, exit_code, ("no JUnit report",))
    return suite_result(suite, list(root.iter("testcase")), exit_code, duration_s)


def suite_result(suite: str, cases: list[ET.Element], exit_code: int,
                 duration_s: float) -> SuiteResult:
    """Totals of a suite's JUnit testcase elements (of one report, or of its shards')."""
    failures, skipped = [], 0
    for case in cases:
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif "skipped" in outcome:
            skipped += 1
    # A setup error and a failure of the same test are two testcase entries; count tests once.
    names = {(c.get("classname"), c.get("name")) for c in cases}
    failed = len(set(failures))
    return SuiteResult(suite, len(names), len(names) - failed - skipped, failed, skipped,
                       duration_s, exit_code, tuple(sorted(set(failures))))


def available_suites() -> list[str]:
    return sorted(p.name for p in SCENARIOS_DIR.iterdir()
                  if p.is_dir() and any(p.glob("test_*.py")))


def chosen_suites(named: list[str] | None) -> list[str]:
    """The suites named on the command line, else the core suites; an unknown name is an error
    that lists the suites there are."""
    known = available_suites()
    suites = named or [s for s in CORE_SUITES if s in known]
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise CommandError(f"no suite {', '.join(unknown)} (there are {', '.join(known)})")
    return suites


def run(args: argparse.Namespace) -> None:
    suites = chosen_suites(args.suites)
    for engine in args.docker_hosts or [None]:
        provider = make_provider(args.provider, docker_host=engine)
        on = f" on {engine}" if engine else ""
        with step(f"image amphora ({args.agent} agent){on}"):
            amphora_image_of(provider, args)
        with step(f"image member{on}"):
            provider.ensure_image("member")
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.shard is not None:
        run_name += f"-shard-{args.shard.index}-of-{args.shard.count}"
    out_dir = console.RESULTS_DIR / "run" / run_name
    out_dir.mkdir(parents=True, exist_ok=True)
    pytest_args = [*(f"--docker-host={engine}" for engine in args.docker_hosts),
                   *agent_pytest_args(args), f"--driver={args.driver}", *args.pytest_args]
    results = []
    for suite in suites:
        CONSOLE.rule(f"suite {suite}")
        junit = out_dir / f"{suite}.xml"
        started = time.monotonic()
        child = run_forwarding_signals(
            suite_argv(suite, junit, args.provider, console.RESULTS_DIR, pytest_args,
                       args.shard),
            cwd=Path.cwd())
        results.append(parse_junit(junit, suite, child.exit_code, time.monotonic() - started))
        if child.signal is not None:
            OUT.print(suites_table(results))
            CONSOLE.print(f"amphora-harness: {child.signal_name}: suite {suite} stopped "
                          f"(its pytest exited {child.exit_code}); no further suites",
                          style="red")
            raise SystemExit(128 + child.signal)
    OUT.print(suites_table(results))
    for line in failure_lines(results):
        OUT.print(line, style="red", markup=False, highlight=False)
    OUT.print(f"JUnit reports in {out_dir}")
    failed = [r.suite for r in results if not r.ok]
    if failed:
        raise CommandError(f"suites with failures: {', '.join(failed)}")


def suite_argv(suite: str, junit: Path, provider: str, results_dir: Path,
               pytest_args: list[str], shard: Shard | None = None) -> list[str]:
    """The pytest command of one suite (of its shard's tests, given a shard). --rootdir: node
    ids read scenarios/<suite>/... whether the suites sit in a checkout or in site-packages,
    as in the recorded durations."""
    return [sys.executable, "-m", "pytest", str(SCENARIOS_DIR / suite), "-q",
            "-c", str(SUITES_INI), f"--rootdir={SCENARIOS_DIR.parent}",
            "-o", f"cache_dir={Path.cwd() / '.pytest_cache'}",
            f"--junitxml={junit}", f"--provider={provider}", f"--results-dir={results_dir}",
            f"--timeout-factor={timeout_factor()}",
            *(shard.pytest_args() if shard is not None else []), *pytest_args]


def suites_table(results: list[SuiteResult]) -> Table:
    table = Table(title="scenario suites")
    for column, justify in (("suite", "left"), ("tests", "right"), ("passed", "right"),
                            ("failed", "right"), ("skipped", "right"), ("time", "right")):
        table.add_column(column, justify=justify)
    for r in results:
        table.add_row(r.suite, str(r.tests), f"[green]{r.passed}[/]",
                      f"[red]{r.failed}[/]" if r.failed else "0", str(r.skipped),
                      f"{r.duration_s:.0f}s")
    return table


def failure_lines(results: list[SuiteResult]) -> list[str]:
    """One line per failing test (the table has no room for their names)."""
    return [f"failed in {r.suite}: {name}" for r in results for name in r.failures]


def register(commands: argparse._SubParsersAction) -> None:
    suites = add_command(
        commands, "run", help="run scenario suites, then print a results table",
        description=f"Run scenario suites (default: {', '.join(CORE_SUITES)}), each with a "
        "JUnit report under results/run/. Arguments after -- go to pytest.")
    add_agent_options(suites)
    add_driver_option(suites)
    suites.add_argument("suites", nargs="*", metavar="SUITE")
    suites.add_argument(
        "--shard", type=shard, metavar="I/K",
        help="run only shard I of K of each suite, balanced by the recorded test durations "
        "(pytest-split); join the shards' reports with `amphora-harness merge`")
    suites.set_defaults(func=run, pytest_args=[])
