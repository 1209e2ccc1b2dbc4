"""`amphora-harness conformance` without an engine: outcomes read from a pytest JUnit report
(passed, failed, xfailed with its reason, skipped) and the Markdown table made of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.cli.conformance import Outcome, driver_list, markdown, outcomes
from harness.pytest_drivers import deselected_report

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
  <testcase classname="scenarios.failover.test_failover" name="test_ok" time="1.0"/>
  <testcase classname="scenarios.failover.test_failover" name="test_broken" time="1.0">
    <failure message="assert 1 == 2">...</failure></testcase>
  <testcase classname="scenarios.failover.test_failover" name="test_known" time="1.0">
    <skipped type="pytest.xfail" message="Octavia bug: X | Y">...</skipped></testcase>
  <testcase classname="scenarios.failover.test_failover" name="test_later" time="0.0">
    <skipped type="pytest.skip" message="not here">...</skipped></testcase>
</testsuite></testsuites>
"""


def test_outcomes_and_their_table(tmp_path: Path) -> None:
    report = tmp_path / "failover-octavia.xml"
    report.write_text(JUNIT)
    found = outcomes(report)
    assert found == {
        "test_failover::test_ok": Outcome("passed"),
        "test_failover::test_broken": Outcome("failed", "assert 1 == 2"),
        "test_failover::test_known": Outcome("xfailed", "Octavia bug: X | Y"),
        "test_failover::test_later": Outcome("skipped", "not here"),
    }
    assert outcomes(tmp_path / "absent.xml") == {}

    rows = [("failover", scenario, {"ours": Outcome("passed"), "octavia": outcome})
            for scenario, outcome in found.items()]
    table = markdown(rows, ["ours", "octavia"]).splitlines()
    assert table[0] == "| suite | scenario | ours | octavia |"
    assert "| failover | test_failover::test_known | passed | xfailed: Octavia bug: X \\| Y |" \
        in table
    assert len(table) == 2 + len(found)


def test_the_driver_axis_is_a_list_of_known_drivers() -> None:
    assert driver_list("harness, octavia") == ("harness", "octavia")
    for wrong in ("ours", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="drivers are harness, octavia"):
            driver_list(wrong)


def test_scenarios_deselected_for_the_driver_are_in_the_table_with_their_reason(
        tmp_path: Path) -> None:
    report = tmp_path / "config_push-ours-octavia.xml"
    report.write_text(JUNIT)
    deselected_report(report).write_text(json.dumps(
        {"scenarios/config_push/test_l7.py::test_cidrs": "a security group does it"}))
    assert outcomes(report)["test_l7::test_cidrs"] == Outcome(
        "deselected", "a security group does it")
