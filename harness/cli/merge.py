"""`amphora-harness merge`: the JUnit reports of several runs (the shards of `run --shard I/K`,
from K CI jobs) joined into one results table and one JUnit file.

Each run directory holds one `<suite>.xml` per suite. A suite's test cases are gathered from
every directory; a test reported by two shards means the shards overlapped (they were cut from
different collections or durations files), which is an error: the merged table would count it
twice.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from harness.cli import console
from harness.cli.arguments import add_command
from harness.cli.console import OUT, CommandError
from harness.cli.suites import SuiteResult, failure_lines, suite_result, suites_table


def read_reports(directories: list[Path]) -> dict[str, list[tuple[Path, ET.Element]]]:
    """suite -> (report, root element) of every `<suite>.xml` in the directories."""
    reports: dict[str, list[tuple[Path, ET.Element]]] = defaultdict(list)
    for directory in directories:
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory of JUnit reports")
        files = sorted(directory.glob("*.xml"))
        if not files:
            raise CommandError(f"{directory} holds no JUnit reports (*.xml)")
        for path in files:
            try:
                reports[path.stem].append((path, ET.parse(path).getroot()))
            except ET.ParseError as exc:
                raise CommandError(f"{path}: not a JUnit report ({exc})") from None
    return dict(reports)


def test_id(case: ET.Element) -> str:
    return f"{case.get('classname', '')}::{case.get('name', '')}"


def merge_suite(suite: str, reports: list[tuple[Path, ET.Element]]) -> SuiteResult:
    """One suite's result over its shards' reports."""
    cases: list[ET.Element] = []
    reported_by: dict[str, Path] = {}
    for path, root in reports:
        # pytest reports a setup error and a failure of one test as two cases: a test belongs
        # to the report it appears in, and to no other report.
        for name in {test_id(case) for case in root.iter("testcase")}:
            if name in reported_by:
                raise CommandError(f"{name} is in both {reported_by[name]} and {path}: the "
                                   "shards overlap")
            reported_by[name] = path
        cases += root.iter("testcase")
    duration_s = sum(float(s.get("time", 0)) for _, root in reports for s in root.iter("testsuite"))
    failed = any(case.find("failure") is not None or case.find("error") is not None
                 for case in cases)
    return suite_result(suite, cases, 1 if failed else 0, duration_s)


def merged_junit(reports: dict[str, list[tuple[Path, ET.Element]]]) -> ET.ElementTree:
    """One <testsuites> document: every shard's <testsuite> elements, named after their suite."""
    merged = ET.Element("testsuites")
    for suite, suite_reports in sorted(reports.items()):
        for _, root in suite_reports:
            for testsuite in root.iter("testsuite"):
                testsuite.set("name", suite)
                merged.append(testsuite)
    return ET.ElementTree(merged)


def merge(args: argparse.Namespace) -> None:
    reports = read_reports(args.runs)
    results = [merge_suite(suite, reports[suite]) for suite in sorted(reports)]
    output = args.junit or console.RESULTS_DIR / "run" / "merged.xml"
    output.parent.mkdir(parents=True, exist_ok=True)
    merged_junit(reports).write(output, encoding="utf-8", xml_declaration=True)
    OUT.print(suites_table(results))
    for line in failure_lines(results):
        OUT.print(line, style="red", markup=False, highlight=False)
    OUT.print(f"{sum(r.tests for r in results)} tests from {len(args.runs)} runs; merged JUnit "
              f"report: {output}")
    failed = [r.suite for r in results if not r.ok]
    if failed:
        raise CommandError(f"suites with failures: {', '.join(failed)}")


def register(commands: argparse._SubParsersAction) -> None:
    command = add_command(
        commands, "merge", help="join the JUnit reports of several runs (shards) into one table",
        description="Join the reports of `run --shard I/K` runs (their results/run/<time>-shard-"
        "I-of-K directories, e.g. gathered from K CI jobs) into one results table and one JUnit "
        "file.")
    command.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    command.add_argument("--junit", type=Path, metavar="FILE",
                         help="where the merged JUnit report goes (default: "
                              "<results>/run/merged.xml)")
    command.set_defaults(func=merge)
