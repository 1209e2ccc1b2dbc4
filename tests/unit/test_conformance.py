"""`amphora-harness conformance` without an engine: outcomes read from a pytest JUnit report
(passed, failed, xfailed with its reason, skipped) and the Markdown table made of them."""

from __future__ import annotations

from pathlib import Path

from harness.cli.conformance import Outcome, markdown, outcomes

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
