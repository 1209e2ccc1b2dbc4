"""PNG plots of bench results: latency distributions, our agent against Octavia's, and results
against a baseline.

(The failover timelines are harness.observe.plots.plot_timeline's.) Everything is drawn from a
results
file's content, so plots can be made again from any results file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from harness.bench.results import METRICS, Comparison

TARGET_LABELS = {"direct": "wrk → member (direct)", "vip": "wrk → VIP → member",
                 "vip-reloading": "wrk → VIP, reloading"}
TARGET_COLOURS = {"direct": "tab:blue", "vip": "tab:orange", "vip-reloading": "tab:red"}


def plot_latency(results: dict[str, Any], path: Path) -> Path:
    """Left: each load run's latency by percentile (direct vs through the VIP). Right: the agent
    API's latency samples."""
    fig = Figure(figsize=(12, 4.5), dpi=110)
    load_ax, api_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    labelled: set[str] = set()
    for run in results.get("load_runs", []):
        points = sorted((float(p), ms) for p, ms in run["latency_ms"].items())
        # x = 1/(1-p): the tail spreads out (50 %, 90 %, 99 %, 99.9 % equally spaced).
        xs = [1 / (1 - p / 100) for p, _ in points]
        target = run["target"]
        ax_label = None if target in labelled else TARGET_LABELS.get(target, target)
        labelled.add(target)
        load_ax.plot(xs, [ms for _, ms in points], color=TARGET_COLOURS.get(target, "grey"),
                     alpha=0.7, linewidth=1.2, label=ax_label)
    load_ax.set_xscale("log")
    ticks = [50, 90, 99, 99.9, 99.99]
    load_ax.set_xticks([1 / (1 - t / 100) for t in ticks], [f"{t}%" for t in ticks])
    load_ax.set_yscale("log")
    load_ax.set_xlabel("percentile")
    load_ax.set_ylabel("request latency (ms)")
    load_ax.set_title("load runs (wrk, kept-alive connections)")
    if labelled:
        load_ax.legend(fontsize=8)

    metrics = results.get("metrics", {})
    for key, colour in (("agent_api_latency_ms[info]", "tab:green"),
                        ("agent_api_latency_ms[upload]", "tab:purple")):
        if key in metrics:
            samples = metrics[key]["samples"]
            api_ax.hist(samples, bins=_bins(samples), color=colour, alpha=0.6,
                        label=f"{key.split('[')[1][:-1]} (median "
                              f"{metrics[key]['median']:.1f} ms)")
    api_ax.set_xscale("log")
    api_ax.set_xlabel("agent API latency (ms)")
    api_ax.set_ylabel("requests")
    api_ax.set_title("agent API (mutual TLS)")
    if any(k.startswith("agent_api_latency_ms") for k in metrics):
        api_ax.legend(fontsize=8)
    fig.suptitle(f"amphora-harness bench {results.get('mode', '')} {results.get('started', '')}")
    fig.tight_layout()
    return _save(fig, path)


def plot_agents(table: Sequence[dict[str, Any]], path: Path) -> Path:
    """One bar per measure of the agent axis (results' agents.table): the median of the per-pair
    ratio ours / Octavia's on a log scale, left of 1 where ours is faster (or smaller); each bar
    names both agents' p50 and where the measure was taken (host processes or lab amphorae)."""
    fig = Figure(figsize=(10, 0.5 * max(len(table), 3) + 1.5), dpi=110)
    ax = fig.subplots()
    ratios = [row["ratio"] for row in table]
    ax.barh(range(len(table)), [math.log(r) for r in ratios],
            color=["tab:green" if r <= 1 else "tab:red" for r in ratios])
    ax.set_yticks(range(len(table)), [
        f"{row['measure']} ({row['where']}): {_p50(row['ours_p50'], row['unit'])} vs "
        f"{_p50(row['octavia_p50'], row['unit'])}" for row in table], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    logs = [math.log(r) for r in ratios]
    ax.set_xlim(min([*logs, -math.log(2)]) * 1.15, max([*logs, math.log(2)]) * 1.15)
    ticks = [t for t in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4)
             if ax.get_xlim()[0] <= math.log(t) <= ax.get_xlim()[1]]
    ax.set_xticks([math.log(t) for t in ticks], [f"x{t:.3g}" for t in ticks])
    ax.invert_yaxis()
    ax.set_xlabel("ours / Octavia's (median of per-pair ratios; left = ours faster or smaller)")
    ax.set_title("our agent against Octavia's own agent (p50: ours vs Octavia's)")
    fig.tight_layout()
    return _save(fig, path)


def _p50(value: float, unit: str) -> str:
    # Three significant digits, without an exponent for the seconds-long pushes in ms.
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def plot_against_baseline(comparisons: Sequence[Comparison], threshold: float,
                          path: Path) -> Path:
    """One bar per metric: current/baseline (log scale), worse to the right for every metric
    (higher-is-better ones are inverted), the threshold marked."""
    fig = Figure(figsize=(10, 0.45 * max(len(comparisons), 3) + 1.5), dpi=110)
    ax = fig.subplots()
    keys = [c.key for c in comparisons]
    worse_by = [_worse_by(c) for c in comparisons]
    colours = ["tab:red" if c.regressed and c.gated else
               "tab:orange" if c.regressed else "tab:green" for c in comparisons]
    ax.barh(range(len(keys)), [math.log(w) for w in worse_by], color=colours)
    ax.set_yticks(range(len(keys)), [f"{k} ({c.basis})" for k, c in zip(keys, comparisons,
                                                                         strict=True)],
                  fontsize=8)
    limit = math.log(1 + threshold)
    ax.axvline(limit, color="red", linestyle="--", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    logs = [math.log(w) for w in worse_by]
    left = min([*logs, -math.log(1.5)]) * 1.2
    right = max([*logs, limit]) * 1.2
    ax.set_xlim(left, right)
    # Powers of two (at most about eight), or finer steps when every change is small.
    powers = [k for k in range(-10, 11) if left <= k * math.log(2) <= right]
    ticks = [2.0 ** k for k in powers[:: max(1, len(powers) // 8)]]
    if len(ticks) < 3:
        ticks = [t for t in (0.67, 0.8, 1, 1.25, 1.5) if left <= math.log(t) <= right]
    ax.set_xticks([math.log(t) for t in ticks], [f"x{t:.3g}" for t in ticks])
    ax.invert_yaxis()
    ax.set_xlabel("worse by (current against baseline; right = worse)")
    ax.set_title(f"against the baseline (dashed: the threshold, {threshold:.0%} worse)")
    fig.tight_layout()
    return _save(fig, path)


def _worse_by(comparison: Comparison) -> float:
    """The change as a factor that is above 1 when the metric got worse."""
    change = comparison.change if math.isfinite(comparison.change) and comparison.change > 0 \
        else 1e3
    spec = METRICS.get(comparison.key)
    return 1 / change if spec is not None and spec.better == "higher" else change


def _bins(samples: Sequence[float]) -> list[float]:
    low, high = max(min(samples), 1e-3), max(max(samples), 1e-3)
    if high <= low:
        high = low * 1.1
    count = 30
    return [low * (high / low) ** (i / count) for i in range(count + 1)]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
