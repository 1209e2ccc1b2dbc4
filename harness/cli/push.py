"""`amphora-harness push` and `traffic`: the load balancer of a standing lab, and traffic
through its VIP, summarised."""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from harness.cli.arguments import (
    add_command,
    add_driver_option,
    add_octavia_source_option,
    chosen_lab,
    lab_option,
    octavia_source_of,
)
from harness.cli.console import OUT, CommandError, step
from harness.drivers.standing_push import push_lb
from harness.lab import reach
from harness.lab.shape import check_lb_file, resolve_lb
from harness.lab.standing import StandingLab
from harness.observe.traffic import TimelineRecorder
from harness.observe.vip import answering_amphora, carriers_of
from harness.octavia_source import OctaviaSource
from harness.polling import poll_until

SERVING_TIMEOUT_S = 30.0


def push(args: argparse.Namespace) -> None:
    lb_file = resolve_lb(args.lb_file)
    named = octavia_source_of(args) if args.octavia_source is not None else None
    with chosen_lab(args) as lab:
        check_lb_file(lb_file, len(lab.members))
        # Without --octavia-source, Octavia's driver comes from the Octavia the lab's amphorae
        # were built from (`up --agent octavia --octavia-source ...`): one checkout, both sides.
        source = named or lab.record.lab_options()["octavia_source"]
        push_and_wait(lab, lb_file, args.driver, source)


def push_and_wait(standing: StandingLab, lb_file: Path, driver: str = "harness",
                  octavia_source: OctaviaSource | None = None) -> None:
    """Create or update the lab's load balancer with driver (harness.drivers.factory), then wait
    until something answers on its VIP."""
    first = standing.record.load_balancer is None
    with step(f"{'create' if first else 'update'} load balancer from {lb_file.name}"
              f" ({driver} driver)"):
        push_lb(standing, lb_file, driver, octavia_source)
    lb = standing.record.load_balancer
    with step(f"{lb.url(standing.record.vip)} serving"):
        _wait_serving(standing)


def _wait_serving(standing: StandingLab) -> None:
    listener = standing.record.load_balancer.listener(None)
    url = standing.vip_url()

    def serving() -> bool:
        # haproxy adds the X-Amphora-Id header only in HTTP mode: a TCP listener is serving
        # when a member's answer comes back through it.
        if listener["protocol"] == "TCP":
            return tcp_answers(standing.record.vip, listener["port"])
        # Whichever driver rendered haproxy.cfg: the member names the amphora it saw.
        return answering_amphora(url, standing.amphorae,
                                 carriers=carriers_of(standing.amphorae)) is not None

    if poll_until(serving, SERVING_TIMEOUT_S, 0.3):
        return
    raise CommandError(f"nothing answers on the VIP after {SERVING_TIMEOUT_S:.0f}s "
                       "(`amphora-harness logs 0` shows the agent's log)")


def tcp_answers(address: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a connection to address:port gets a line back (the lab's members send one)."""
    try:
        with reach.connect(address, port, timeout=timeout) as sock, \
                sock.makefile("rb") as answer:
            return bool(answer.readline())
    except OSError:
        return False


def traffic(args: argparse.Namespace) -> None:
    with chosen_lab(args) as lab:
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
    from harness.bench.wrk import Wrk

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


def register(commands: argparse._SubParsersAction) -> None:
    send = add_command(
        commands, "push", help="push a load balancer (creates it, or updates the one there)")
    send.add_argument("lb_file", metavar="LB-FILE", help="fixtures/lbs name or YAML file")
    add_driver_option(send)
    add_octavia_source_option(send)
    lab_option(send)
    send.set_defaults(func=push)

    load = add_command(commands, "traffic",
                       help="send traffic through the VIP and summarise it")
    load.add_argument("--port", type=int, help="listener port (default: the first listener)")
    load.add_argument("--duration", type=float, default=5.0, help="seconds (default 5)")
    load.add_argument("--rate", type=float, default=20.0,
                      help="new connections per second (default 20)")
    load.add_argument("--load", action="store_true",
                      help="instead: wrk with kept-alive connections, as fast as it goes")
    load.add_argument("--connections", type=int, default=16, help="wrk connections")
    lab_option(load)
    load.set_defaults(func=traffic)
