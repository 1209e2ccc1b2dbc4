"""The bench's arithmetic and files, without an engine: summaries, same-run ratios, the results
file, baseline comparison, wrk's report, the PNG plots, and the agent axis's table and turn
taking (boots and pushes with fakes). (Failover down time is the
timeline's: tests/components/test_traffic.py.)"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.bench import engine_timings
from harness.bench.agent_axis import IN_LAB, ON_HOST, side_by_side
from harness.bench.plots import plot_against_baseline, plot_agents, plot_latency
from harness.bench.results import (
    SCHEMA,
    ResultsError,
    Samples,
    agent_metric,
    compare,
    lab_metric,
    metric_entries,
    ratio_samples,
    read_results,
    regressions,
    summarize,
    write_results,
)
from harness.bench.run import agents_where
from harness.bench.single_lb import measure_config_pushes
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
    agents = side_by_side(metric_entries({
        agent_metric("ours", "info"): [2.0, 4.0], agent_metric("octavia", "info"): [40.0, 50.0],
        "config_push_to_serving_ms": [90.0, 200.0],
        lab_metric("octavia", "config_push_to_serving_ms"): [1500.0, 100.0]}))
    assert [row["ratio"] > 1 for row in agents] == [False, True]  # one bar each side of x1
    for path in (plot_latency(current, tmp_path / "latency.png"),
                 plot_against_baseline(compare(current, baseline, 0.25), 0.25,
                                       tmp_path / "baseline.png"),
                 plot_agents(agents, tmp_path / "agents.png")):
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
        {"measure": "info", "where": ON_HOST, "unit": "ms", "ours_p50": 3.0,
         "octavia_p50": 10.0, "ratio": 0.2}]


def test_agent_axis_lab_rows_state_readiness_against_container_start() -> None:
    ready, push = "amphora_ready_s", "config_push_to_serving_ms"
    metrics = metric_entries({
        "container_start_s": [0.5, 1.0],
        ready: [1.0, 3.0], lab_metric("octavia", ready): [10.0, 20.0],
        push: [80.0, 100.0, 90.0], lab_metric("octavia", push): [400.0, 200.0, 300.0],
    })
    assert lab_metric("ours", ready) == ready  # older results files compare with ours
    octavia_ready = metrics["amphora_ready_s[octavia]"]
    assert octavia_ready["reference"] == "container_start_s"
    assert octavia_ready["ratio"]["samples"] == [20.0, 20.0]
    readiness, pushes = side_by_side(metrics)
    assert readiness == {
        "measure": ready, "where": IN_LAB, "unit": "s", "ours_p50": 2.0, "octavia_p50": 15.0,
        "ratio": statistics.median([0.1, 0.15]),  # boot n against boot n
        "reference": "container_start_s", "ours_to_reference": 2.5,
        "octavia_to_reference": 20.0}
    # Pushes take turns: pair by pair (0.2, 0.5, 0.3); no same-run reference.
    assert pushes == {"measure": push, "where": IN_LAB, "unit": "ms", "ours_p50": 90.0,
                      "octavia_p50": 300.0, "ratio": 0.3}


def test_octavias_lab_metrics_compare_by_their_basis_and_are_not_gated() -> None:
    ready, push = lab_metric("octavia", "amphora_ready_s"), \
        lab_metric("octavia", "config_push_to_serving_ms")
    baseline = results_with({"container_start_s": [0.5], ready: [5.0], push: [100.0]})
    slower = results_with({"container_start_s": [0.5], ready: [10.0], push: [300.0]})
    by_key = {c.key: c for c in compare(slower, baseline, 0.25)}
    assert by_key[ready].basis == "ratio to container_start_s"
    assert by_key[ready].change == 2.0
    assert by_key[push].basis == "median"
    assert by_key[ready].regressed and by_key[push].regressed
    assert regressions(compare(slower, baseline, 0.25)) == []  # Octavia's, not ours


class FakeLoadBalancer:
    def __init__(self, name: str, times: list[float], order: list[str]) -> None:
        self.name, self.times, self.order = name, times, order

    def push_to_serving_ms(self, n: int) -> float:
        self.order.append(f"{self.name}{n}")
        return self.times[n]


def test_config_pushes_take_turns_push_by_push() -> None:
    order: list[str] = []
    samples = Samples()
    push = "config_push_to_serving_ms"
    measure_config_pushes({push: FakeLoadBalancer("ours", [1.0, 2.0], order),
                           lab_metric("octavia", push): FakeLoadBalancer("octavia", [3.0, 4.0],
                                                                         order)},
                          2, samples, lambda _: None)
    assert order == ["ours0", "octavia0", "ours1", "octavia1"]
    assert samples.by_key == {push: [1.0, 2.0], lab_metric("octavia", push): [3.0, 4.0]}


@dataclass
class FakeAmphora:
    node: str
    ready_s: float


class FakeLab:
    def __init__(self, agent: str, order: list[str], killed: list[str]) -> None:
        self.agent, self.order, self.booted = agent, order, 0
        self.provider = SimpleNamespace(kill=killed.append)

    def add_amphora(self) -> FakeAmphora:
        self.booted += 1
        self.order.append(f"{self.agent}{self.booted}")
        return FakeAmphora(f"{self.agent}-node-{self.booted}", float(self.booted))


def test_boots_interleave_octavias_amphorae_and_keep_each_agents_first(monkeypatch) -> None:
    order: list[str] = []
    killed: list[str] = []
    monkeypatch.setattr(engine_timings, "bare_container_start",
                        lambda lab, image, n: order.append(f"bare{n + 1}") or 0.5)
    samples = Samples()
    first = engine_timings.measure_boots(
        FakeLab("ours", order, killed), "image", 2, samples, lambda _: None,
        {"octavia": FakeLab("octavia", order, killed)})
    assert order == ["bare1", "ours1", "octavia1", "bare2", "ours2", "octavia2"]
    assert {agent: a.node for agent, a in first.items()} == {
        "ours": "ours-node-1", "octavia": "octavia-node-1"}
    assert killed == ["ours-node-2", "octavia-node-2"]
    assert samples.by_key["amphora_ready_s[octavia]"] == [1.0, 2.0]
    assert samples.by_key["container_start_s"] == [0.5, 0.5]


def test_agents_where_says_which_measures_come_from_lab_amphorae() -> None:
    both = agents_where(("ours", "octavia"), in_lab=True)
    assert "processes on this host" in both and "second lab" in both
    assert "amphora_ready_s" in both and "config_push_to_serving_ms" in both
    assert "not booted" in agents_where(("ours", "octavia"), in_lab=False)
    assert "no agent axis" in agents_where(("ours",), in_lab=False)


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
    console.print(agents_table([
        {"measure": "upload", "where": ON_HOST, "unit": "ms", "ours_p50": 81.0,
         "octavia_p50": 261.0, "ratio": 0.29},
        {"measure": "amphora_ready_s", "where": IN_LAB, "unit": "s", "ours_p50": 1.2,
         "octavia_p50": 14.0, "ratio": 0.09, "reference": "container_start_s",
         "ours_to_reference": 3.2, "octavia_to_reference": 37.0}]))
    lines = console.export_text().splitlines()
    [upload] = [line for line in lines if "upload" in line]
    assert [cell.strip() for cell in upload.split("│")[1:7]] == [
        "upload", ON_HOST, "81 ms", "261 ms", "0.29", ""]
    [ready] = [line for line in lines if "amphora_ready_s" in line]
    assert [cell.strip() for cell in ready.split("│")[1:7]] == [
        "amphora_ready_s", IN_LAB, "1.2 s", "14 s", "0.09", "3.20 / 37.00 x container_start_s"]


def test_agent_option_takes_ours_and_octavia(capsys) -> None:
    assert agent_names("octavia, ours") == ("ours", "octavia")
    assert agent_names("ours") == ("ours",)
    with pytest.raises(SystemExit):
        main(["bench", "--agent", "octavia"])
    assert "includes ours" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--agent", "ours,amphorae"])
