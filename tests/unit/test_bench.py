"""The bench's arithmetic and files, without an engine: summaries, same-run ratios, the results
file, baseline comparison, wrk's report, and the PNG plots. (Failover down time is the
timeline's: tests/components/test_traffic.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bench.agent_axis import side_by_side
from harness.bench.plots import plot_against_baseline, plot_latency
from harness.bench.results import (
    SCHEMA,
    ResultsError,
    agent_metric,
    compare,
    metric_entries,
    ratio_samples,
    read_results,
    regressions,
    summarize,
    write_results,
)
from harness.bench.wrk import (
    WRK_PERCENTILES,
    WRK_REPORT_MARK,
    load_run_from_report,
    parse_wrk_report,
)
from harness.cli.bench import agent_names, agents_table
from harness.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results_with(samples: dict[str, list[float]], **extra) -> dict:
    return {"schema": SCHEMA, "mode": "quick", "metrics": metric_entries(samples), **extra}


def test_summary_is_median_and_spread() -> None:
    summary = summarize([3.0, 1.0, 2.0, 10.0])
    assert summary["median"] == 2.5
    assert (summary["min"], summary["max"], summary["n"]) == (1.0, 10.0, 4)
    assert summary["mad"] == 1.0  # |deviations| 0.5, 1.5, 0.5, 7.5 -> median 1.0
    with pytest.raises(ValueError):
        summarize([])


def test_ratios_pair_interleaved_runs_and_fall_back_to_medians() -> None:
    assert ratio_samples([50, 90], [100, 100]) == [0.5, 0.9]
    assert ratio_samples([50, 60, 70], [100, 200]) == [60 / 150]


def test_entries_state_data_plane_against_direct_and_ready_against_start() -> None:
    metrics = metric_entries({"direct_rps": [1000, 2000], "data_plane_rps": [800, 1000],
                              "container_start_s": [0.5, 0.5], "amphora_ready_s": [2.0, 1.0]})
    assert metrics["data_plane_rps"]["ratio"]["samples"] == [0.8, 0.5]
    assert metrics["data_plane_rps"]["reference"] == "direct_rps"
    assert metrics["amphora_ready_s"]["ratio"]["median"] == 3.0
    assert metrics["direct_rps"]["ratio"] is None
    with pytest.raises(ValueError, match="unknown metrics"):
        metric_entries({"made_up_s": [1.0]})


def test_results_file_round_trip_and_refusals(tmp_path: Path) -> None:
    path = write_results(tmp_path / "r" / "results.json", results_with({"direct_rps": [5.0]}))
    assert read_results(path)["metrics"]["direct_rps"]["median"] == 5.0
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ResultsError, match="not a bench results file"):
        read_results(tmp_path / "other.json")
    with pytest.raises(ResultsError, match="cannot read"):
        read_results(tmp_path / "missing.json")


def test_a_slower_metric_regresses_beyond_the_threshold_only() -> None:
    baseline = results_with({"config_push_to_serving_ms": [100.0]})
    slightly = results_with({"config_push_to_serving_ms": [120.0]})
    much = results_with({"config_push_to_serving_ms": [200.0]})
    assert not regressions(compare(slightly, baseline, 0.25))
    [comparison] = compare(much, baseline, 0.25)
    assert comparison.regressed and comparison.basis == "median"
    assert comparison.change == pytest.approx((200 + 5) / (100 + 5))


def test_throughput_is_compared_by_its_same_run_ratio() -> None:
    baseline = results_with({"direct_rps": [1000.0], "data_plane_rps": [900.0]})
    # A busier machine: both halved, the ratio is the same -> no regression.
    busy = results_with({"direct_rps": [500.0], "data_plane_rps": [450.0]})
    # The data plane alone got slower.
    slower = results_with({"direct_rps": [1000.0], "data_plane_rps": [500.0]})
    assert not regressions(compare(busy, baseline, 0.25))
    worse = regressions(compare(slower, baseline, 0.25))
    assert [c.key for c in worse] == ["data_plane_rps"]
    assert worse[0].basis == "ratio to direct_rps"
    # direct_rps measures the machine: worse, but never gated.
    by_key = {c.key: c for c in compare(busy, baseline, 0.25)}
    assert by_key["direct_rps"].regressed and not by_key["direct_rps"].gated


def test_errors_from_zero_count_through_the_floor() -> None:
    none = results_with({"reload_under_load_errors": [0.0]})
    some = results_with({"reload_under_load_errors": [1.0]})
    assert not regressions(compare(none, none, 0.25))
    [comparison] = regressions(compare(some, none, 0.25))
    assert comparison.change == 2.0  # (1 + 1) / (0 + 1)


def test_metrics_missing_on_one_side_are_not_compared() -> None:
    baseline = results_with({"direct_rps": [1.0]})
    current = results_with({"agent_api_latency_ms[info]": [2.0]})
    assert compare(current, baseline, 0.25) == []
    with pytest.raises(ValueError):
        compare(current, baseline, 0)


def wrk_line(requests: int = 5000, connect_errors: int = 0) -> str:
    percentiles = ",".join(f'"{p}":{int(p * 10)}' for p in WRK_PERCENTILES)
    return (f"Running 2s test\n{WRK_REPORT_MARK}{{\"requests\":{requests},"
            f"\"duration_us\":2000000,\"bytes\":1,\"errors\":{{\"connect\":{connect_errors},"
            "\"read\":1,\"write\":0,\"status\":2,\"timeout\":0},\"latency_us\":{\"mean\":1.0,"
            f"\"stdev\":1.0,\"max\":9,\"percentiles\":{{{percentiles}}}}}}}\n")


def test_wrk_report_becomes_a_load_run() -> None:
    run = load_run_from_report("vip", parse_wrk_report(wrk_line(connect_errors=3)), 0.2)
    assert run.rps == 2500
    assert run.failed == 3 + 1 + 2
    assert run.latency_ms["50"] == 0.5 and run.latency_ms["99.9"] == pytest.approx(0.999)
    with pytest.raises(Exception, match="no report"):
        parse_wrk_report("wrk: connection refused")


def test_plots_are_png_files(tmp_path: Path) -> None:
    current = results_with(
        {"agent_api_latency_ms[info]": [1.0, 2.0, 2.5, 9.0], "direct_rps": [1000.0],
         "data_plane_rps": [500.0], "reload_under_load_errors": [2.0]},
        started="2026-01-01T00:00:00+00:00",
        load_runs=[{"target": target, "latency_ms": {str(p): p / 10 * factor
                                                     for p in WRK_PERCENTILES}}
                   for target, factor in (("direct", 1.0), ("vip", 2.0))])
    baseline = results_with({"direct_rps": [1000.0], "data_plane_rps": [900.0],
                             "reload_under_load_errors": [0.0]})
    for path in (plot_latency(current, tmp_path / "latency.png"),
                 plot_against_baseline(compare(current, baseline, 0.25), 0.25,
                                       tmp_path / "baseline.png")):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_bench_refuses_a_bad_baseline_before_measuring(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--quick", "--baseline", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("amphora-harness: cannot read results") and "\n" not in err
    assert main(["bench", "--threshold", "0"]) == 1
    assert "--threshold must be positive" in capsys.readouterr().err


def test_agent_axis_states_ours_per_call_against_octavias_same_run() -> None:
    metrics = metric_entries({
        agent_metric("ours", "info"): [2.0, 4.0, 3.0],
        agent_metric("octavia", "info"): [10.0, 10.0, 20.0],
        agent_metric("ours", "upload"): [50.0],  # Octavia's not measured: no row
    })
    assert metrics[agent_metric("ours", "info")]["ratio"]["samples"] == [0.2, 0.4, 0.15]
    assert metrics[agent_metric("octavia", "info")]["ratio"] is None
    assert side_by_side(metrics) == [
        {"call": "info", "ours_p50_ms": 3.0, "octavia_p50_ms": 10.0, "ratio": 0.2}]


def test_agent_axis_baseline_compares_the_ratio() -> None:
    ours, octavia = agent_metric("ours", "upload"), agent_metric("octavia", "upload")
    baseline = results_with({ours: [50.0], octavia: [100.0]})
    busier = results_with({ours: [100.0], octavia: [200.0]})  # both slower, same ratio
    worse = results_with({ours: [90.0], octavia: [100.0]})
    assert not regressions(compare(busier, baseline, 0.25))
    assert [c.key for c in regressions(compare(worse, baseline, 0.25))] == [ours]


def test_agent_table_prints_each_call_with_its_ratio() -> None:
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(agents_table([{"call": "upload", "ours_p50_ms": 81.0,
                                 "octavia_p50_ms": 261.0, "ratio": 0.29}]))
    [row] = [line for line in console.export_text().splitlines() if "upload" in line]
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["upload", "81", "261", "0.29"]


def test_agent_option_takes_ours_and_octavia(capsys) -> None:
    assert agent_names("octavia, ours") == ("ours", "octavia")
    assert agent_names("ours") == ("ours",)
    with pytest.raises(SystemExit):
        main(["bench", "--agent", "octavia"])
    assert "includes ours" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--agent", "ours,amphorae"])
