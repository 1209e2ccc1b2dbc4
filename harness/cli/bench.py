"""`amphora-harness bench`: the bench's metrics into results/bench/, a table, and a verdict
against a baseline."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from harness.cli import console
from harness.cli.arguments import add_command, provider_of
from harness.cli.console import CONSOLE, OUT, CommandError

REGRESSION_EXIT = 3


def bench(args: argparse.Namespace) -> None:
    # Imported here: matplotlib and the bench's machinery cost every other command a second.
    from harness.bench.plan import FULL, QUICK
    from harness.bench.plots import plot_against_baseline, plot_agents, plot_latency
    from harness.bench.results import (
        compare,
        comparisons_json,
        read_results,
        regressions,
        write_results,
    )
    from harness.bench.run import Bench, bench_dir

    if args.threshold <= 0:
        raise CommandError("--threshold must be positive (0.25 = 25 %)")
    baseline = read_results(args.baseline) if args.baseline else None  # fail before measuring
    settings = dataclasses.replace(QUICK if args.quick else FULL, agents=args.agent)
    out_dir = bench_dir(args.out or console.RESULTS_DIR / "bench", settings.mode)
    with CONSOLE.status(f"bench ({settings.mode})") as spinner:
        def say(text: str) -> None:
            # Plain text: metric keys such as config_push_to_serving_ms[octavia] are no markup.
            CONSOLE.log(escape(text))
            spinner.update(f"bench {settings.mode}: {escape(text)}")

        runner = Bench(provider_of(args), settings, out_dir, say=say)
        results = runner.run()
    plots = [plot_latency(results, out_dir / "latency.png"), *runner.save_timelines()]
    if results["agents"]["table"]:
        plots.append(plot_agents(results["agents"]["table"], out_dir / "agents.png"))
    comparisons = []
    if baseline is not None:
        comparisons = compare(results, baseline, args.threshold)
        results["baseline"] = comparisons_json(comparisons, args.baseline, args.threshold)
        if comparisons:
            plots.append(plot_against_baseline(comparisons, args.threshold,
                                               out_dir / "against-baseline.png"))
    results["plots"] = [p.name for p in plots]
    path = write_results(out_dir / "results.json", results)
    OUT.print(metrics_table(results, comparisons))
    if results["agents"]["table"]:
        OUT.print(agents_table(results["agents"]["table"]))
    OUT.print(f"results: {path}")
    worse = regressions(comparisons)
    if worse:
        CONSOLE.print(f"[red]regressed by more than {args.threshold:.0%}: "
                      f"{', '.join(c.key for c in worse)}[/]")
        raise SystemExit(REGRESSION_EXIT)


def metrics_table(results: dict, comparisons: list) -> Table:
    by_key = {c.key: c for c in comparisons}
    table = Table(title=f"bench {results['mode']} ({results['duration_s']:.0f}s, "
                        f"load average {results['host']['load_average_before'][0]:.1f})")
    table.add_column("metric", no_wrap=True)
    for column in ("median", "min..max", "n", "same-run ratio", "baseline"):
        table.add_column(column, justify="right")
    for key, entry in results["metrics"].items():
        ratio = entry.get("ratio")
        comparison = by_key.get(key)
        verdict = ""
        if comparison is not None:
            colour = "red" if comparison.regressed and comparison.gated else "green"
            verdict = f"[{colour}]x{comparison.change:.2f} {comparison.verdict}[/]"
        table.add_row(
            escape(key), f"{_number(entry['median'])} {entry['unit']}",
            f"{_number(entry['min'])}..{_number(entry['max'])}", str(entry["n"]),
            f"{ratio['median']:.2f}" if ratio else "", verdict)
    return table


def agents_table(rows: list[dict]) -> Table:
    """The agent axis side by side: each measure's p50 for both agents, ours / Octavia's (same
    run), where it was taken, and each one's ratio to a same-run reference where it has one."""
    table = Table(title="our agent against Octavia's (p50)")
    for column in ("measure", "where", "ours", "octavia", "ours / octavia", "x reference"):
        table.add_column(column, justify="left" if column in ("measure", "where") else "right")
    for row in rows:
        unit = row["unit"]
        against = ""
        if row.get("reference"):
            against = (f"{row['ours_to_reference']:.2f} / {row['octavia_to_reference']:.2f} "
                       f"x {escape(row['reference'])}")
        table.add_row(escape(row["measure"]), row["where"],
                      f"{_number(row['ours_p50'])} {unit}",
                      f"{_number(row['octavia_p50'])} {unit}",
                      "" if row["ratio"] is None else f"{row['ratio']:.2f}", against)
    return table


def agent_names(text: str) -> tuple[str, ...]:
    """--agent: a comma-separated list of ours, octavia; ours always comes first."""
    from harness.bench.host_agents import AGENTS

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in AGENTS]
    if unknown or "ours" not in names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of {', '.join(AGENTS)} that includes ours")
    return ("ours", *(n for n in names if n != "ours"))


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def register(commands: argparse._SubParsersAction) -> None:
    measure = add_command(
        commands, "bench", help="measure the metrics into results/bench/",
        description="Measure every metric of the design notes (each repeated: median and "
        "spread) into results/bench/<time>/results.json, with PNG plots.")
    measure.add_argument("--quick", action="store_true", help="a short run (for CI)")
    measure.add_argument("--baseline", type=Path, metavar="FILE",
                         help="compare with this results file; exit 3 on a regression")
    measure.add_argument("--threshold", type=float, default=0.25,
                         help="how much worse counts as a regression (default 0.25 = 25 %%)")
    measure.add_argument("--agent", type=agent_names, default=("ours",), metavar="LIST",
                         help="agents to measure: ours (default) or ours,octavia, which adds "
                         "the agent axis: every API call to our agent and to Octavia's own "
                         "agent (from .venv-octavia), both on this host, interleaved; and, "
                         "with the docker provider, amphora readiness and config push on "
                         "amphorae of Octavia's agent in a second lab, interleaved with ours; "
                         "each with the ratio")
    measure.add_argument("--out", type=Path,
                         help="where result directories go (default: RESULTS-DIR/bench)")
    measure.set_defaults(func=bench)
