"""Sharded runs (`amphora-harness run --shard I/K`, then `merge`), with no engine: the shards'
collections of each core suite, through the very pytest command `run` gives a suite, are
disjoint and together the unsharded collection; and merging their reports makes one table."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from harness.cli.console import CommandError
from harness.cli.main import main
from harness.cli.merge import merge_suite, read_reports
from harness.cli.suites import CORE_SUITES, Shard, shard, suite_argv

SHARDS = 2


def collected(suite: str, tmp_path: Path, selected: Shard | None) -> list[str]:
    argv = suite_argv(suite, tmp_path / f"{suite}.xml", "docker", tmp_path / "results",
                      ["--collect-only", "-p", "no:cacheprovider"], selected)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    # pytest exits 5 when a shard of a small suite holds nothing.
    assert run.returncode in (0, 5), run.stdout + run.stderr
    return [line for line in run.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("suite", CORE_SUITES)
def test_the_shards_of_a_suite_are_disjoint_and_make_up_the_whole_suite(
        suite: str, tmp_path: Path) -> None:
    whole = collected(suite, tmp_path, None)
    assert whole, f"{suite} collects nothing"
    shards = [collected(suite, tmp_path, Shard(i, SHARDS)) for i in range(1, SHARDS + 1)]
    assert sorted(shards[0] + shards[1]) == sorted(whole)
    assert len(set(shards[0]) & set(shards[1])) == 0


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "/2"])
def test_a_shard_is_i_of_k(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no shard"):
        shard(text)
    assert shard("2/3") == Shard(2, 3)


def junit(*cases: str) -> str:
    return f'<testsuites><testsuite name="pytest" time="2.5">{"".join(cases)}' \
           "</testsuite></testsuites>"


def case(name: str, outcome: str = "") -> str:
    return f'<testcase classname="scenarios.smoke.test_smoke" name="{name}">{outcome}</testcase>'


def write_runs(tmp_path: Path, *shard_reports: dict[str, str]) -> list[Path]:
    runs = []
    for n, reports in enumerate(shard_reports, start=1):
        run = tmp_path / f"run-shard-{n}-of-{len(shard_reports)}"
        run.mkdir()
        for suite, text in reports.items():
            (run / f"{suite}.xml").write_text(text)
        runs.append(run)
    return runs


def test_merged_shards_make_one_table_and_one_report(tmp_path: Path, capsys) -> None:
    runs = write_runs(
        tmp_path,
        {"smoke": junit(case("test_a"), case("test_b", '<skipped message="no"/>')),
         "stats": junit(case("test_s"))},
        {"smoke": junit(case("test_c"), case("test_d")), "stats": junit()},
    )
    reports = read_reports(runs)
    smoke = merge_suite("smoke", reports["smoke"])
    assert (smoke.tests, smoke.passed, smoke.skipped, smoke.failed) == (4, 3, 1, 0)
    assert smoke.duration_s == 5.0
    output = tmp_path / "merged.xml"
    assert main(["merge", *map(str, runs), "--junit", str(output)]) == 0
    assert "5 tests from 2 runs" in capsys.readouterr().out
    assert output.read_text().count("<testcase") == 5


def test_a_failure_in_any_shard_fails_the_merge(tmp_path: Path, capsys) -> None:
    runs = write_runs(tmp_path, {"smoke": junit(case("test_a"))},
                      {"smoke": junit(case("test_b", '<failure message="boom"/>'))})
    assert main(["merge", *map(str, runs), "--junit", str(tmp_path / "m.xml")]) == 1
    captured = capsys.readouterr()
    assert "failed in smoke: scenarios.smoke.test_smoke::test_b" in captured.out
    assert "suites with failures: smoke" in captured.err


def test_a_test_in_two_shards_is_an_error(tmp_path: Path) -> None:
    runs = write_runs(tmp_path, {"smoke": junit(case("test_a"))},
                      {"smoke": junit(case("test_a"))})
    with pytest.raises(CommandError, match="the shards overlap"):
        merge_suite("smoke", read_reports(runs)["smoke"])


def test_a_directory_without_reports_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="holds no JUnit reports"):
        read_reports([tmp_path])
