"""`amphora-harness conformance`: the core suites against each agent (ours and Octavia's own),
driven by each driver asked for (--drivers; ours by default, Octavia's too), one scenario per
row, one agent (agent/driver, with more than our driver) per column: passed, failed, xfailed
(with the reason), skipped.

Each suite runs per agent in a pytest child as `run` runs it (harness.cli.suites), with a JUnit
report; the table is read from the reports and written to results/conformance/<time>/ as
Markdown (table.md) and JSON (results.json), and printed.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from harness.cli import console
from harness.cli.arguments import add_command, octavia_source_of, provider_of
from harness.cli.console import CONSOLE, OUT, CommandError, step
from harness.cli.signals import run_forwarding_signals
from harness.cli.suites import CORE_SUITES, chosen_suites, suite_argv
from harness.drivers.factory import DRIVER_NAMES
from harness.lab.octavia_agent import AGENTS, OCTAVIA
from harness.pytest_drivers import deselected_report

OUTCOME_STYLES = {"passed": "green", "failed": "red", "xfailed": "yellow", "skipped": "dim",
                  "deselected": "dim", "missing": "red"}


@dataclass(frozen=True)
class Outcome:
    outcome: str  # passed | failed | xfailed | skipped | deselected
    reason: str = ""


def outcomes(junit: Path) -> dict[str, Outcome]:
    """Scenario (suite-relative node id) -> outcome, from a pytest JUnit report."""
    found: dict[str, Outcome] = {}
    if not junit.is_file():
        return found
    for case in ET.parse(junit).getroot().iter("testcase"):
        scenario = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            found[scenario] = Outcome("failed", (failure.get("message") or "")[:300])
        elif skipped is not None:
            kind = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
            found[scenario] = Outcome(kind, skipped.get("message") or "")
        else:
            found[scenario] = Outcome("passed")
    return found | deselected(junit)


def deselected(junit: Path) -> dict[str, Outcome]:
    """The scenarios the run deselected for its driver, with the reason (the driver plugin
    lists them beside the JUnit report)."""
    listed = deselected_report(junit)
    if not listed.is_file():
        return {}
    reasons = json.loads(listed.read_text())
    return {f"{Path(node.split('::')[0]).stem}::{node.split('::', 1)[1]}":
            Outcome("deselected", reason) for node, reason in reasons.items()}


def conformance(args: argparse.Namespace) -> None:
    suites = chosen_suites(args.suites)
    agents = list(args.agents)
    drivers = list(args.drivers)
    # One column per agent, and per driver when the table has more than ours.
    columns = {(agent, driver): agent if drivers == ["harness"] else f"{agent}/{driver}"
               for agent in agents for driver in drivers}
    if OCTAVIA in agents and args.provider != "docker":
        raise CommandError(f"Octavia's agent runs on the docker provider only, not "
                           f"{args.provider}: use --provider docker or --agents ours")
    provider = provider_of(args)
    source_args = [f"--octavia-source={args.octavia_source}"] if args.octavia_source else []
    if OCTAVIA in agents:
        with step("image octavia-amphora"):
            provider.ensure_octavia_image(octavia_source_of(args))
    out_dir = console.RESULTS_DIR / "conformance" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, dict[str, Outcome]]] = {}  # suite -> scenario -> column
    for (agent, driver), column in columns.items():
        for suite in suites:
            CONSOLE.rule(f"{suite}, {agent} agent, {driver} driver")
            junit = out_dir / f"{suite}-{agent}-{driver}.xml"
            child = run_forwarding_signals(
                suite_argv(suite, junit, args.provider, console.RESULTS_DIR,
                           [f"--agent={agent}", f"--driver={driver}", *source_args,
                            *args.pytest_args]),
                cwd=Path.cwd())
            for scenario, outcome in outcomes(junit).items():
                table.setdefault(suite, {}).setdefault(scenario, {})[column] = outcome
            if child.signal is not None:
                raise SystemExit(128 + child.signal)
    rows = [(suite, scenario, by_agent) for suite, scenarios in table.items()
            for scenario, by_agent in scenarios.items()]
    labels = list(columns.values())
    (out_dir / "results.json").write_text(json.dumps(
        {"agents": agents, "drivers": drivers, "columns": labels,
         "octavia_source": args.octavia_source or "default",
         "scenarios": [{"suite": suite, "scenario": scenario,
                        **{label: asdict(by_column.get(label, Outcome("missing")))
                           for label in labels}} for suite, scenario, by_column in rows]},
        indent=1) + "\n")
    (out_dir / "table.md").write_text(markdown(rows, labels))
    OUT.print(rich_table(rows, labels))
    OUT.print(f"conformance table in {out_dir}")
    if any(o.outcome == "failed" for _, _, by in rows for o in by.values()):
        raise CommandError("some scenarios failed (see the table)")


def _cell(outcome: Outcome | None) -> str:
    if outcome is None:
        return "missing"
    return outcome.outcome + (f": {outcome.reason}" if outcome.reason else "")


def markdown(rows: list[tuple[str, str, dict[str, Outcome]]], agents: list[str]) -> str:
    lines = [f"| suite | scenario | {' | '.join(agents)} |",
             "|---|---|" + "---|" * len(agents)]
    for suite, scenario, by_agent in rows:
        cells = [_cell(by_agent.get(agent)).replace("|", "\\|").replace("\n", " ")
                 for agent in agents]
        lines.append(f"| {suite} | {scenario} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def rich_table(rows: list[tuple[str, str, dict[str, Outcome]]], agents: list[str]) -> Table:
    table = Table(title="conformance")
    table.add_column("suite")
    table.add_column("scenario")
    for agent in agents:
        table.add_column(agent)
    for suite, scenario, by_agent in rows:
        cells = []
        for agent in agents:
            outcome = by_agent.get(agent)
            style = OUTCOME_STYLES[outcome.outcome if outcome else "missing"]
            cells.append(f"[{style}]{_cell(outcome)[:80]}[/]")
        table.add_row(suite, scenario, *cells)
    return table


def agent_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in AGENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: agents are {', '.join(AGENTS)}")
    return names


def driver_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DRIVER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: drivers are {', '.join(DRIVER_NAMES)}")
    return names


def register(commands: argparse._SubParsersAction) -> None:
    parser = add_command(
        commands, "conformance", help="the core suites against each agent: a scenario table",
        description=f"Run suites (default: {', '.join(CORE_SUITES)}) against each agent and "
        "write results/conformance/<time>/table.md and results.json. Arguments after -- go "
        "to pytest.")
    parser.add_argument("suites", nargs="*", metavar="SUITE")
    parser.add_argument("--agents", type=agent_list, default=AGENTS, metavar="LIST",
                        help=f"comma-separated agents (default: {','.join(AGENTS)})")
    parser.add_argument("--drivers", type=driver_list, default=("harness",), metavar="LIST",
                        help="comma-separated drivers that drive the load balancers (default: "
                        f"harness; all: {','.join(DRIVER_NAMES)})")
    parser.add_argument("--octavia-source", metavar="SOURCE", default=None,
                        help="the Octavia whose agent and driver run (as for `run`)")
    parser.set_defaults(func=conformance, pytest_args=[])
