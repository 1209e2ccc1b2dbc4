"""PNG plots of what people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

# Figure objects render to files without pyplot's global state or any display backend.
from matplotlib.figure import Figure

from harness.observe.traffic import Timeline

LABELLED_OUTAGES = 5
MIN_LABELLED_OUTAGE_S = 0.1


def plot_timeline(timeline: Timeline, path: Path, title: str) -> Path:
    """Latency of every request over time, by amphora, with failures, outages and events."""
    fig = Figure(figsize=(11, 4.5), dpi=110)
    ax = fig.subplots()
    by_amphora: dict[str, tuple[list[float], list[float]]] = {}
    for s in timeline.samples:
        if s.ok:
            xs, ys = by_amphora.setdefault(s.amphora or "unknown", ([], []))
            xs.append(s.sent_at)
            ys.append(s.latency_ms)
    for amphora, (xs, ys) in sorted(by_amphora.items()):
        ax.scatter(xs, ys, s=6, label=f"via {amphora[:8]}")
    failed = timeline.failures()
    if failed:
        ax.scatter(
            [s.sent_at for s in failed],
            [s.latency_ms for s in failed],
            s=14, marker="x", color="red", label=f"failed ({len(failed)})",
        )
    outages = timeline.outages()
    for outage in outages:
        ax.axvspan(outage.start, outage.end, color="red", alpha=0.12)
    # Durations only for the longest few: under packet loss there are dozens of tiny windows.
    longest = sorted(outages, key=lambda o: o.duration, reverse=True)[:LABELLED_OUTAGES]
    for outage in longest:
        if outage.duration < MIN_LABELLED_OUTAGE_S:
            continue
        ax.annotate(
            f"{outage.duration:.2f}s", (outage.start, 1), xycoords=("data", "axes fraction"),
            xytext=(2, -12), textcoords="offset points", color="darkred", fontsize=8,
        )
    for event in timeline.events:
        ax.axvline(event.at, color="black", linestyle="--", linewidth=0.8)
        ax.annotate(
            event.label, (event.at, 0.02), xycoords=("data", "axes fraction"), rotation=90,
            fontsize=8, xytext=(3, 0), textcoords="offset points",
        )
    ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("request latency (ms)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
