"""The amphora-harness command: images, standing labs, traffic, faults, suites, the bench.

    amphora-harness images build         build the images whose inputs changed
    amphora-harness up [TOPOLOGY]        bring a lab up and leave it running (see harness.lab.shape)
    amphora-harness status | shell AMP | logs NODE | push LB-FILE | traffic
    amphora-harness fault KIND [AMP...] | heal
    amphora-harness down                 remove the lab
    amphora-harness run [SUITE...]       scenario suites, then a results table
    amphora-harness bench [--quick]      performance metrics into results/bench/
    amphora-harness gc                   remove what runs that are gone left behind

Errors print as one readable line and exit non-zero (1; 3 when the bench finds a regression);
progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.drivers.standing_push import push_lb
from harness.faults.kinds import KINDS
from harness.faults.standing import apply_fault, heal_faults
from harness.lab.cleanup import collect_leftovers
from harness.lab.constants import DATA_PLANE_NAMESPACE
from harness.lab.host_tables import remove_lab_tables
from harness.lab.images import RECIPES, ImageBuilder
from harness.lab.lab import Lab
from harness.lab.providers import PROVIDERS, make_provider
from harness.lab.providers.base import Provider
from harness.lab.providers.docker import DockerProvider
from harness.lab.shape import (
    DEFAULT_TOPOLOGY,
    check_lb_file,
    load_topology,
    resolve_lb,
    with_overrides,
)
from harness.lab.standing import StandingLab
from harness.lab.standing_state import (
    LabRecord,
    choose_lab,
    load_record,
    record_lab,
    recorded_lab_ids,
    state_root,
)
from harness.observe.traffic import TimelineRecorder
from harness.paths import REPO_ROOT
from harness.polling import poll_until

CONSOLE = Console(stderr=True, log_path=False)
# Results tables: in a CI log (no terminal) rich would assume 80 columns and fold every cell.
OUT = Console(width=None if sys.stdout.isatty() else 140)
RESULTS_DIR = REPO_ROOT / "results"
SCENARIOS_DIR = REPO_ROOT / "scenarios"
CORE_SUITES = ("smoke", "config_push", "failover", "stats")
DEBUG_ENV = "AMPHORA_HARNESS_DEBUG"
REGRESSION_EXIT = 3
SERVING_TIMEOUT_S = 30.0


class CommandError(Exception):
    """A command failed; its message is printed as is."""


@contextmanager
def step(text: str) -> Iterator[None]:
    """A long step: a spinner while it runs, its duration when it is done."""
    started = time.monotonic()
    with CONSOLE.status(text):
        yield
    CONSOLE.print(f"[green]✓[/] {text} [dim]({time.monotonic() - started:.1f}s)[/]")


def _provider(args: argparse.Namespace) -> Provider:
    return make_provider(getattr(args, "provider", "docker"))


# --- images and gc (H4's first two commands) ---------------------------------------------------

def images_build(args: argparse.Namespace) -> None:
    unknown = set(args.names) - set(RECIPES)
    if unknown:
        raise CommandError(f"no such image: {', '.join(sorted(unknown))} "
                           f"(there are {', '.join(sorted(RECIPES))})")
    provider = _provider(args)
    for name in args.names or sorted(RECIPES):
        started = time.monotonic()
        tag = provider.ensure_image(name)
        print(tag)
        CONSOLE.print(f"[green]{name}[/]: {tag} ready in {time.monotonic() - started:.1f}s")


def gc(args: argparse.Namespace) -> None:
    provider = _provider(args)
    if args.images and not isinstance(provider, DockerProvider):
        raise CommandError(f"--images removes container images; the {provider.name} provider "
                           "has none (use --provider docker)")
    # Labs of `up` carry the keep label: only --all removes them (`down` is the usual way).
    removed = collect_leftovers(provider, include_kept=args.all, everything=args.all)
    for lab_id in removed:
        _forget_lab(lab_id)
        print(f"removed lab {lab_id}")
    existing = {lab.lab_id for lab in provider.labs()}
    for lab_id in recorded_lab_ids():
        if lab_id not in existing:  # gone some other way (a reboot, docker rm)
            load_record(lab_id).remove()
            print(f"forgot lab {lab_id} (nothing of it is left in the engine)")
    kept = [lab.lab_id for lab in provider.labs() if lab.keep]
    live = [lab.lab_id for lab in provider.labs() if not lab.keep]
    if kept:
        CONSOLE.print(f"kept labs left alone: {', '.join(kept)} "
                      "(`amphora-harness down --lab ID` or `gc --all` removes them)")
    if live:
        CONSOLE.print(f"labs of live processes left alone: {', '.join(live)} "
                      "(--all removes them)")
    if args.images:
        builder = ImageBuilder(provider.client)
        for tag in builder.stale_images():
            if builder.remove_unused(tag):
                print(f"removed image {tag}")


def _forget_lab(lab_id: str) -> None:
    """Remove a lab's host-side leftovers: link-fault tables and its state record."""
    remove_lab_tables(lab_id)
    shutil.rmtree(state_root() / lab_id, ignore_errors=True)


# --- standing labs ---------------------------------------------------------------------------

def up(args: argparse.Namespace) -> None:
    topology = with_overrides(
        load_topology(args.topology), topology=args.arrangement, amphorae=args.amphorae,
        members=args.members, load_balancer=args.lb, no_load_balancer=args.no_lb)
    provider = _provider(args)
    images = {}
    for name in ("amphora", "member"):
        with step(f"image {name}"):
            images[name] = provider.ensure_image(name)
    lab = Lab(provider, amphora_image=images["amphora"], member_image=images["member"],
              keep=True)
    try:
        with step(f"lab networks ({provider.name})"):
            lab.up()
        with step(f"{topology.amphorae} amphora(e), {topology.topology.value}"):
            amphorae = lab.add_amphorae(topology.amphorae, topology=topology.topology.value)
        with step(f"{topology.members} member(s)"):
            lab.add_members(topology.members)
        with step("ports: member network plugged, VIP port attached"):
            vip = lab.allocate_vip()
            for amphora in amphorae[: topology.lb_amphorae]:
                lab.plug_member_network(amphora)
                lab.attach_port(amphora, "vip")
        record = record_lab(lab, provider_name=provider.name,
                            topology=topology.topology.value,
                            lb_amphorae=topology.lb_amphorae, vip=vip)
        if topology.load_balancer is not None:
            with StandingLab(record, provider) as standing:
                _push(standing, topology.load_balancer)
    except BaseException:
        lab.keep = False  # a half-built lab is removed, state and all
        lab.down()
        _forget_lab(lab.id)
        raise
    lab.down()  # keep=True: the clients close, everything stays up
    OUT.print(f"lab [bold]{lab.id}[/] is up ({topology.name}: {topology.description or ''})")
    _print_status(record, provider)


def _push(standing: StandingLab, lb_file: Path) -> None:
    first = standing.record.load_balancer is None
    with step(f"{'create' if first else 'update'} load balancer from {lb_file.name}"):
        push_lb(standing, lb_file)
    lb = standing.record.load_balancer
    with step(f"{lb.url(standing.record.vip)} serving"):
        _wait_serving(standing)


def _wait_serving(standing: StandingLab) -> None:
    if poll_until(lambda: standing.answering_amphora() is not None, SERVING_TIMEOUT_S, 0.3):
        return
    raise CommandError(f"nothing answers on the VIP after {SERVING_TIMEOUT_S:.0f}s "
                       "(`amphora-harness logs 0` shows the agent's log)")


@contextmanager
def _standing(args: argparse.Namespace) -> Iterator[StandingLab]:
    record = choose_lab(args.lab)
    with StandingLab(record, make_provider(record.provider)) as standing:
        yield standing


def status(args: argparse.Namespace) -> None:
    if args.lab is None and len(recorded_lab_ids()) > 1:
        for lab_id in recorded_lab_ids():
            record = load_record(lab_id)
            _print_status(record, make_provider(record.provider))
        return
    record = choose_lab(args.lab)
    _print_status(record, make_provider(record.provider))


def _print_status(record: LabRecord, provider: Provider) -> None:
    with StandingLab(record, provider) as lab:
        answering = lab.answering_amphora()
        table = Table(title=f"lab {record.lab_id} — {record.topology}, VIP {record.vip}")
        for column in ("#", "node", "id", "address", "engine", "agent / service"):
            table.add_column(column)
        for n, amphora in enumerate(lab.amphorae):
            running = provider.is_running(amphora.node)
            table.add_row(str(n), _short(amphora.name, record), amphora.id[:8],
                          str(amphora.mgmt_address),
                          "running" if running else "[red]stopped[/]",
                          _agent_summary(amphora, running, amphora is answering,
                                         n < record.lb_amphorae))
        for n, member in enumerate(lab.members, start=1):
            running = provider.is_running(member.node)
            table.add_row(f"m{n}", _short(member.name, record), member.id[:8], str(member.address),
                          "running" if running else "[red]stopped[/]", "member")
        OUT.print(table)
        lb = record.load_balancer
        if lb is None:
            OUT.print("no load balancer pushed (`amphora-harness push LB-FILE`)")
        else:
            urls = ", ".join(lb.url(record.vip, item["port"]) for item in lb.listeners)
            OUT.print(f"load balancer {lb.id[:8]} from {Path(lb.source).name}: {urls}")
        for fault in record.faults:
            OUT.print(f"[yellow]active fault[/]: {fault.kind} on "
                      f"{', '.join(t[:8] for t in fault.targets)} (`amphora-harness heal`)")


def _short(node_name: str, record: LabRecord) -> str:
    return node_name.removeprefix(f"amphora-harness-{record.lab_id}-")


def _agent_summary(amphora, running: bool, answering: bool, carries_lb: bool) -> str:
    if not running:
        return "-"
    try:
        details = amphora.client.get_details()
    except Exception as exc:  # status reports what it sees, whatever the agent does
        return f"[red]agent not answering[/] ({type(exc).__name__})"
    listeners = ", ".join(sorted({item["status"] for item in amphora.client.get_listeners()}))
    parts = [f"haproxy {details.get('haproxy_version')}",
             f"listeners {listeners or 'none'}"]
    if details.get("topology") == "ACTIVE_STANDBY":
        parts.append("VRRP MASTER" if details.get("active") else "VRRP BACKUP")
    if answering:
        parts.append("[green]answers on the VIP[/]")
    if not carries_lb:
        parts.append("spare")
    return ", ".join(parts)


def shell(args: argparse.Namespace) -> None:
    inner = ["ip", "netns", "exec", DATA_PLANE_NAMESPACE, "bash"] if args.data_plane \
        else ["bash"]
    with _standing(args) as lab:
        argv = lab.provider.interactive_argv(_node(lab, args.node), inner)
    if shutil.which(argv[0]) is None:
        raise CommandError(f"shell needs the {argv[0]} command on this host")
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def logs(args: argparse.Namespace) -> None:
    with _standing(args) as lab:
        text = lab.provider.logs(_node(lab, args.node))
    lines = text.splitlines()
    print("\n".join(lines[-args.tail:] if args.tail else lines))


def _node(lab: StandingLab, name: str):
    """An amphora (index, name, id prefix) or a member (m1, m2, ...)."""
    if name.startswith("m") and name[1:].isdigit():
        number = int(name[1:])
        if not 1 <= number <= len(lab.members):
            raise CommandError(f"the lab has members m1..m{len(lab.members)}")
        return lab.members[number - 1].node
    return lab.amphora(name).node


def push(args: argparse.Namespace) -> None:
    lb_file = resolve_lb(args.lb_file)
    with _standing(args) as lab:
        check_lb_file(lb_file, len(lab.members))
        _push(lab, lb_file)


def traffic(args: argparse.Namespace) -> None:
    with _standing(args) as lab:
        lb = lab.record.load_balancer
        if lb is None:
            raise CommandError("no load balancer pushed yet (`amphora-harness push LB-FILE`)")
        if lb.listener(args.port)["protocol"] == "TCP":
            raise CommandError("traffic speaks HTTP; this listener is TCP")
        url = lb.url(lab.record.vip, args.port)
        names = {m.id: f"m{n}" for n, m in enumerate(lab.members, start=1)}
        names |= {a.id: f"amphora {n}" for n, a in enumerate(lab.amphorae)}
        if args.load:
            _load_traffic(url, args)
        else:
            _recorded_traffic(url, args, names)


def _recorded_traffic(url: str, args: argparse.Namespace, names: dict[str, str]) -> None:
    with step(f"{args.rate:g} new connections/s to {url} for {args.duration:g}s"), \
            TimelineRecorder(url, interval=1 / args.rate, max_duration=args.duration) as rec:
        time.sleep(args.duration)
    timeline = rec.stop()
    summary = summarize_timeline(timeline.samples)
    table = Table(title=f"traffic to {url}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("requests", str(summary.requests))
    table.add_row("ok", str(summary.ok))
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    for status_code, count in sorted(summary.statuses.items(), key=str):
        table.add_row(f"status {status_code}", str(count))
    for label, counter in (("member", summary.members), ("amphora", summary.amphorae)):
        for key, count in sorted(counter.items(), key=lambda kv: names.get(kv[0], kv[0])):
            table.add_row(f"via {label} {names.get(key, key)}", str(count))
    for name, value in summary.latency_ms.items():
        table.add_row(f"latency {name}", f"{value:.1f} ms")
    for outage in timeline.outages():
        table.add_row(f"outage at {outage.start:.2f}s", f"{outage.duration:.2f}s")
    OUT.print(table)
    if summary.failed:
        raise CommandError(f"{summary.failed} of {summary.requests} requests failed")


@dataclass(frozen=True)
class TrafficSummary:
    requests: int
    ok: int
    failed: int
    statuses: Counter
    members: Counter
    amphorae: Counter
    latency_ms: dict[str, float]


def summarize_timeline(samples) -> TrafficSummary:
    """Counts by outcome, status, member and amphora; latency percentiles of the answered."""
    answered = sorted(s.latency_ms for s in samples if s.ok)
    latency = {}
    if answered:
        latency = {"p50": statistics.median(answered),
                   "p90": answered[min(len(answered) - 1, int(len(answered) * 0.9))],
                   "p99": answered[min(len(answered) - 1, int(len(answered) * 0.99))],
                   "max": answered[-1]}
    ok = sum(1 for s in samples if s.ok)
    return TrafficSummary(
        requests=len(samples), ok=ok, failed=len(samples) - ok,
        statuses=Counter(s.status if s.status is not None else s.error for s in samples),
        members=Counter(s.member for s in samples if s.ok and s.member),
        amphorae=Counter(s.amphora for s in samples if s.ok and s.amphora),
        latency_ms=latency,
    )


def _load_traffic(url: str, args: argparse.Namespace) -> None:
    from harness.bench.run import Wrk

    wrk = Wrk()
    try:
        with step(f"wrk: {args.connections} connections to {url} for {args.duration:g}s"):
            run = wrk.run(url, max(1, round(args.duration)), args.connections, "vip")
    finally:
        wrk.close()
    table = Table(title=f"load on {url} (wrk, kept-alive connections)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("requests", str(run.requests))
    table.add_row("requests/s", f"{run.rps:.0f}")
    for kind, count in run.errors.items():
        table.add_row(f"errors: {kind}", f"[red]{count}[/]" if count else "0")
    for p in ("50", "90", "99", "99.9"):
        table.add_row(f"latency p{p}", f"{run.latency_ms[p]:.2f} ms")
    table.add_row("wrk CPU (cores)", f"{run.wrk_cpu:.2f}")
    OUT.print(table)


def fault(args: argparse.Namespace) -> None:
    options = {"percent": args.percent, "delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms}
    title = f"fault {args.kind} {' '.join(args.targets)}".strip()
    with _standing(args) as lab, step(title):
        applied = apply_fault(lab, args.kind, args.targets, options)
    OUT.print(f"applied: {applied} (`amphora-harness heal` undoes it)")


def heal(args: argparse.Namespace) -> None:
    with _standing(args) as lab:
        if not lab.record.faults:
            OUT.print("no active faults")
            return
        with step(f"healing {len(lab.record.faults)} fault(s)"):
            errors = heal_faults(lab, on_step=lambda text: CONSOLE.log(text))
    if errors:
        raise CommandError("; ".join(errors))
    OUT.print("healed")


def down(args: argparse.Namespace) -> None:
    if args.all:
        lab_ids = recorded_lab_ids()
    elif args.lab:
        lab_ids = [args.lab]  # also a lab `up` did not record (pytest --keep-lab)
    else:
        lab_ids = [choose_lab(None).lab_id]
    recorded = set(recorded_lab_ids())
    for lab_id in lab_ids:
        # A lab `up` recorded says where it runs; any other is looked for with --provider.
        provider = make_provider(load_record(lab_id).provider) if lab_id in recorded \
            else _provider(args)
        if lab_id not in recorded and lab_id not in {lab.lab_id for lab in provider.labs()}:
            raise CommandError(f"no lab {lab_id} (`amphora-harness status` lists them)")
        with step(f"lab {lab_id} down"):
            provider.teardown(lab_id)
            _forget_lab(lab_id)
    if not lab_ids:
        OUT.print("no lab is up")


# --- suites -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SuiteResult:
    suite: str
    tests: int
    passed: int
    failed: int
    skipped: int
    duration_s: float
    exit_code: int
    failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        # pytest exits 5 when a suite collects nothing; that is no failure.
        return self.failed == 0 and self.exit_code in (0, 5)


def parse_junit(path: Path, suite: str, exit_code: int, duration_s: float) -> SuiteResult:
    """Totals of a JUnit XML file (pytest's), and the names of the failing tests."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        # No report: pytest did not get as far as writing one (a usage or collection error).
        return SuiteResult(suite, 0, 0, 1, 0, duration_s, exit_code, ("no JUnit report",))
    cases = list(root.iter("testcase"))
    failures, skipped = [], 0
    for case in cases:
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif "skipped" in outcome:
            skipped += 1
    # A setup error and a failure of the same test are two testcase entries; count tests once.
    names = {(c.get("classname"), c.get("name")) for c in cases}
    failed = len(set(failures))
    return SuiteResult(suite, len(names), len(names) - failed - skipped, failed, skipped,
                       duration_s, exit_code, tuple(sorted(set(failures))))


def available_suites() -> list[str]:
    return sorted(p.name for p in SCENARIOS_DIR.iterdir()
                  if p.is_dir() and any(p.glob("test_*.py")))


def run(args: argparse.Namespace) -> None:
    known = available_suites()
    suites = args.suites or [s for s in CORE_SUITES if s in known]
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise CommandError(f"no suite {', '.join(unknown)} (there are {', '.join(known)})")
    provider = _provider(args)
    for name in ("amphora", "member"):
        with step(f"image {name}"):
            provider.ensure_image(name)
    out_dir = RESULTS_DIR / "run" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for suite in suites:
        CONSOLE.rule(f"suite {suite}")
        junit = out_dir / f"{suite}.xml"
        argv = [sys.executable, "-m", "pytest", str(SCENARIOS_DIR / suite), "-q",
                f"--junitxml={junit}", f"--provider={args.provider}", *args.pytest_args]
        started = time.monotonic()
        exit_code = subprocess.run(argv, cwd=REPO_ROOT).returncode
        results.append(parse_junit(junit, suite, exit_code, time.monotonic() - started))
    OUT.print(suites_table(results))
    for line in failure_lines(results):
        OUT.print(line, style="red", markup=False, highlight=False)
    OUT.print(f"JUnit reports in {out_dir}")
    failed = [r.suite for r in results if not r.ok]
    if failed:
        raise CommandError(f"suites with failures: {', '.join(failed)}")


def suites_table(results: list[SuiteResult]) -> Table:
    table = Table(title="scenario suites")
    for column, justify in (("suite", "left"), ("tests", "right"), ("passed", "right"),
                            ("failed", "right"), ("skipped", "right"), ("time", "right")):
        table.add_column(column, justify=justify)
    for r in results:
        table.add_row(r.suite, str(r.tests), f"[green]{r.passed}[/]",
                      f"[red]{r.failed}[/]" if r.failed else "0", str(r.skipped),
                      f"{r.duration_s:.0f}s")
    return table


def failure_lines(results: list[SuiteResult]) -> list[str]:
    """One line per failing test (the table has no room for their names)."""
    return [f"failed in {r.suite}: {name}" for r in results for name in r.failures]


# --- bench ------------------------------------------------------------------------------------

def bench(args: argparse.Namespace) -> None:
    from harness.bench.plots import plot_against_baseline, plot_latency
    from harness.bench.results import (
        compare,
        comparisons_json,
        read_results,
        regressions,
        write_results,
    )
    from harness.bench.run import FULL, QUICK, Bench, bench_dir

    if args.threshold <= 0:
        raise CommandError("--threshold must be positive (0.25 = 25 %)")
    baseline = read_results(args.baseline) if args.baseline else None  # fail before measuring
    settings = QUICK if args.quick else FULL
    out_dir = bench_dir(args.out, settings.mode)
    with CONSOLE.status(f"bench ({settings.mode})") as spinner:
        def say(text: str) -> None:
            CONSOLE.log(text)
            spinner.update(f"bench {settings.mode}: {text}")

        runner = Bench(_provider(args), settings, out_dir, say=say)
        results = runner.run()
    plots = [plot_latency(results, out_dir / "latency.png"), *runner.save_timelines()]
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


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


# --- the parser ---------------------------------------------------------------------------------

def _lab_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lab", metavar="ID", help="which lab (default: the only one up)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amphora-harness", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--provider", default="docker", choices=PROVIDERS,
                        help="where labs run (default: docker)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    images = commands.add_parser("images", help="the amphora and member images")
    images_commands = images.add_subparsers(dest="images_command", required=True)
    build = images_commands.add_parser(
        "build", help="build the images whose inputs changed (unchanged inputs build nothing)")
    build.add_argument("names", nargs="*", metavar="NAME",
                       help=f"which images ({', '.join(sorted(RECIPES))}; default: all)")
    build.set_defaults(func=images_build)

    start = commands.add_parser(
        "up", help="bring a lab up and leave it running",
        description="Bring a lab up from a topology (fixtures/topologies/NAME.yaml or a file); "
        "flags override its fields. The lab stays up until `amphora-harness down`.")
    start.add_argument("topology", nargs="?", default=DEFAULT_TOPOLOGY, metavar="TOPOLOGY",
                       help=f"a topology name or file (default: {DEFAULT_TOPOLOGY})")
    arrangement = start.add_mutually_exclusive_group()
    arrangement.add_argument("--single", dest="arrangement", action="store_const",
                             const="SINGLE", help="one amphora carries the load balancer")
    arrangement.add_argument("--active-standby", dest="arrangement", action="store_const",
                             const="ACTIVE_STANDBY", help="a VRRP pair carries it")
    start.add_argument("--amphorae", type=_positive_int, help="how many (more are spares)")
    start.add_argument("--members", type=_positive_int, help="how many members")
    lb = start.add_mutually_exclusive_group()
    lb.add_argument("--lb", metavar="LB", help="load balancer: fixtures/lbs/LB.yaml or a file")
    lb.add_argument("--no-lb", action="store_true", help="push no load balancer")
    start.set_defaults(func=up)

    show = commands.add_parser("status", help="nodes, agents, VRRP, load balancer, faults")
    _lab_option(show)
    show.set_defaults(func=status)

    enter = commands.add_parser("shell", help="a shell inside an amphora (or member)")
    enter.add_argument("node", metavar="NODE",
                       help="amphora index (0, 1), name or id prefix; m1, m2 for members")
    enter.add_argument("--data-plane", action="store_true",
                       help="in the amphora's data-plane namespace")
    _lab_option(enter)
    enter.set_defaults(func=shell)

    log = commands.add_parser("logs", help="a node's console log (an amphora's: the agent)")
    log.add_argument("node", metavar="NODE", help="as for shell")
    log.add_argument("--tail", type=_positive_int, default=0, help="only the last N lines")
    _lab_option(log)
    log.set_defaults(func=logs)

    send = commands.add_parser(
        "push", help="push a load balancer (creates it, or updates the one there)")
    send.add_argument("lb_file", metavar="LB-FILE", help="fixtures/lbs name or YAML file")
    _lab_option(send)
    send.set_defaults(func=push)

    load = commands.add_parser("traffic", help="send traffic through the VIP and summarise it")
    load.add_argument("--port", type=int, help="listener port (default: the first listener)")
    load.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    load.add_argument("--rate", type=float, default=20.0,
                      help="new connections per second (default 20)")
    load.add_argument("--load", action="store_true",
                      help="instead: wrk with kept-alive connections, as fast as it goes")
    load.add_argument("--connections", type=int, default=16, help="wrk connections")
    _lab_option(load)
    load.set_defaults(func=traffic)

    inject = commands.add_parser(
        "fault", help="inject a fault (until `heal`)",
        description="Inject a fault. Kinds:\n" + "\n".join(
            f"  {name:16} {kind.help}" for name, kind in KINDS.items())
        + "\nAMP: amphora index, name or id prefix, or `active` (the one answering on the VIP).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    inject.add_argument("kind", choices=sorted(KINDS), metavar="KIND")
    inject.add_argument("targets", nargs="*", metavar="AMP")
    inject.add_argument("--percent", type=int, default=30, help="loss: percent (default 30)")
    inject.add_argument("--delay-ms", type=int, default=100, help="delay: ms (default 100)")
    inject.add_argument("--jitter-ms", type=int, default=0, help="delay: jitter ms")
    _lab_option(inject)
    inject.set_defaults(func=fault)

    cure = commands.add_parser("heal", help="heal every active fault, newest first")
    _lab_option(cure)
    cure.set_defaults(func=heal)

    stop = commands.add_parser("down", help="remove a lab (containers, networks, state)")
    _lab_option(stop)
    stop.add_argument("--all", action="store_true", help="every lab `up` brought up")
    stop.set_defaults(func=down)

    suites = commands.add_parser(
        "run", help="run scenario suites, then print a results table",
        description=f"Run scenario suites (default: {', '.join(CORE_SUITES)}), each with a "
        "JUnit report under results/run/. Arguments after -- go to pytest.")
    suites.add_argument("suites", nargs="*", metavar="SUITE")
    suites.set_defaults(func=run, pytest_args=[])

    measure = commands.add_parser(
        "bench", help="measure the metrics into results/bench/",
        description="Measure every metric of the design notes (each repeated: median and "
        "spread) into results/bench/<time>/results.json, with PNG plots.")
    measure.add_argument("--quick", action="store_true", help="a short run (for CI)")
    measure.add_argument("--baseline", type=Path, metavar="FILE",
                         help="compare with this results file; exit 3 on a regression")
    measure.add_argument("--threshold", type=float, default=0.25,
                         help="how much worse counts as a regression (default 0.25 = 25 %%)")
    measure.add_argument("--out", type=Path, default=RESULTS_DIR / "bench",
                         help="where result directories go (default results/bench)")
    measure.set_defaults(func=bench)

    collect = commands.add_parser(
        "gc", help="remove labs left by runs that are gone (containers, networks)")
    collect.add_argument("--all", action="store_true",
                         help="also remove labs of live processes and labs `up` keeps")
    collect.add_argument("--images", action="store_true",
                         help="also remove our images that no current input set produces")
    collect.set_defaults(func=gc)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Arguments after `--` go to pytest (for `run`)."""
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    args = build_parser().parse_args(argv)
    if extra:
        if args.command != "run":
            build_parser().error("arguments after -- are for `run` only")
        args.pytest_args = extra
    return args


def error_line(exc: BaseException) -> str:
    """One readable line: the message's first line, the rest saved to a file named there."""
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    if rest.strip():
        log = RESULTS_DIR / "cli-errors" / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(text + "\n")
            first += f" (more in {log})"
        except OSError:
            pass
    return first


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        CONSOLE.print("amphora-harness: interrupted", style="red")
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        known = isinstance(exc, CommandError | OSError) or \
            type(exc).__module__.startswith(("harness", "amphora_agent"))
        prefix = "" if known else f"{type(exc).__name__}: "
        # markup=False: engine messages contain brackets that rich would read as markup.
        CONSOLE.print(f"amphora-harness: {prefix}{error_line(exc)}", style="red", markup=False,
                      highlight=False, soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
