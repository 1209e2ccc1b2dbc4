"""amphora-harness bench: one run of the measurement plan (harness.bench.plan) on live amphorae,
and the results it writes.

The measurements are the plan's modules' (agent_axis, engine_timings, single_lb, failover);
this one runs them in order in one lab (two with Octavia's agent on the agent axis: its
amphorae need a lab of their own), collects their samples and puts the results file together
(harness.bench.results does the arithmetic).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bench import failover
from harness.bench.agent_axis import (
    LAB_PROVIDER,
    lab_axis_runs,
    measure_agents,
    measure_push_against_octavia,
    octavia_lab,
    side_by_side,
)
from harness.bench.agent_memory import measure_agent_memory
from harness.bench.engine_timings import measure_boots
from harness.bench.plan import FAILOVER_KINDS, BenchSettings
from harness.bench.results import SCHEMA, Samples, metric_entries
from harness.bench.single_lb import SingleLoadBalancer
from harness.bench.versions import host, versions
from harness.bench.wrk import LoadRun, Wrk
from harness.lab.lab import Lab
from harness.lab.octavia_agent import OCTAVIA
from harness.lab.providers.base import Provider
from harness.observe.plots import plot_timeline
from harness.observe.traffic import Timeline
from harness.octavia_source import parse_octavia_source


class Bench:
    """One bench run on a provider. Progress goes to `say`; samples accumulate in `samples`,
    wrk's runs in `load_runs`, the first failover timeline of each kind in `timelines`."""

    def __init__(self, provider: Provider, settings: BenchSettings, out_dir: Path,
                 say: Callable[[str], None] = print) -> None:
        self.provider = provider
        self.settings = settings
        self.out_dir = out_dir
        self.say = say
        self.samples = Samples()
        self.load_runs: list[LoadRun] = []
        self.timelines: dict[str, Timeline] = {}
        self.versions: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_before = os.getloadavg()
        if OCTAVIA in self.settings.agents:
            measure_agents(self.settings.agents, self.settings.api_requests, self.samples,
                           self.say)
        images = {}
        for name in ("amphora", "member"):
            self.say(f"images: {name}")
            images[name] = self.provider.ensure_image(name)
        if self.in_lab:
            self.say("images: Octavia's amphora")
            images["octavia-amphora"] = self.provider.ensure_octavia_image(
                parse_octavia_source(None))
        wrk = Wrk()
        try:
            with contextlib.ExitStack() as labs:
                lab = labs.enter_context(Lab(self.provider, amphora_image=images["amphora"],
                                             member_image=images["member"],
                                             results_dir=self.out_dir / "labs"))
                others = {}
                if self.in_lab:
                    others[OCTAVIA] = labs.enter_context(octavia_lab(
                        self.provider, images["octavia-amphora"], images["member"],
                        self.out_dir / "labs"))
                self.measure_in_labs(lab, others, images, wrk)
        finally:
            wrk.close()
        return self.results(started, load_before)

    @property
    def in_lab(self) -> bool:
        """Whether Octavia's agent is measured in lab amphorae too (docker provider only)."""
        return lab_axis_runs(self.settings.agents, self.provider)

    def measure_in_labs(self, lab: Lab, others: dict[str, Lab], images: dict[str, str],
                        wrk: Wrk) -> None:
        """Everything measured on amphorae: `lab` runs ours, `others` other agents' (agent ->
        lab), whose amphorae boot and push in turn with ours."""
        first = measure_boots(lab, images["amphora"], self.settings.repeats, self.samples,
                              self.say, others)
        amphora = first["ours"]
        self.say("members")
        members = lab.add_members(2)
        single = SingleLoadBalancer(lab, amphora, members, self.settings, self.samples,
                                    self.say)
        self.versions = versions(self.provider, amphora, images, wrk)
        single.measure_agent_api()
        single.measure_throughput(wrk)
        single.measure_reload_under_load(wrk)
        if OCTAVIA in others:
            info = first[OCTAVIA].client.get_info()
            self.versions["octavia_agent"] = {key: info.get(key) for key in
                                              ("haproxy_version", "api_version")}
            measure_push_against_octavia(others[OCTAVIA], first[OCTAVIA], single,
                                         self.settings, self.samples, self.say)
        else:
            single.measure_config_push()
        measure_agent_memory(self.provider, first, self.settings.repeats, self.samples,
                             self.say)
        if OCTAVIA in others:
            # Its part is done: its amphora and members leave the CPU to the failovers.
            others[OCTAVIA].down()
        self.load_runs = single.load_runs
        # The single amphora's part is done; its CPU is the pairs' now.
        self.provider.kill(amphora.node)
        for kind in FAILOVER_KINDS:
            for n in range(self.settings.failover_repeats):
                self.say(f"failover {kind} {n + 1}/{self.settings.failover_repeats}")
                timeline = failover.measure_failover(lab, members[0], kind,
                                                     self.samples, self.say)
                self.timelines.setdefault(kind, timeline)

    def results(self, started: float, load_before: tuple[float, ...]) -> dict[str, Any]:
        metrics = metric_entries(self.samples.by_key)
        return {
            "schema": SCHEMA,
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "mode": self.settings.mode,
            "settings": asdict(self.settings),
            "host": host(load_before),
            "versions": self.versions,
            "load_tool": {
                "tool": "wrk", "threads": 1, "connections": self.settings.load_connections,
                "duration_s": self.settings.load_duration_s,
                "runs_on": "the host: to the VIP through the lab's vip bridge, to the member "
                           "through its member bridge",
                "wrk_cpu_median": statistics.median(r.wrk_cpu for r in self.load_runs)
                if self.load_runs else None,
                "not_the_bottleneck_because": "wrk's CPU use (CPU seconds per second, one "
                "thread) stays well below 1.0 in every run, and the direct run to the member "
                "is the ceiling the VIP runs are measured against",
            },
            "failover": failover.conditions(),
            "metrics": metrics,
            "agents": {
                "agents": list(self.settings.agents),
                "where": agents_where(self.settings.agents, self.in_lab),
                "table": side_by_side(metrics),
            },
            "load_runs": [asdict(r) | {"rps": r.rps} for r in self.load_runs],
        }

    def save_timelines(self) -> list[Path]:
        paths = []
        for kind, timeline in self.timelines.items():
            timeline.write_json(self.out_dir / f"failover-{kind}.json")
            paths.append(plot_timeline(timeline, self.out_dir / f"failover-{kind}.png",
                                       f"failover, {kind.replace('_', ' ')} of the MASTER"))
        return paths


def agents_where(agents: tuple[str, ...], in_lab: bool) -> str:
    """Where the agent axis's measures come from (results' agents.where)."""
    if OCTAVIA not in agents:
        return "our agent only: no agent axis (--agent ours)"
    host = ("API calls (agent_api_ms[AGENT:CALL]): both agents as processes on this host, "
            "127.0.0.1, one lab PKI, the driver's client; calls interleaved one for one "
            "(harness.bench.host_agents)")
    if not in_lab:
        return (host + "; amphorae of Octavia's agent were not booted (they need the "
                f"{LAB_PROVIDER} provider)")
    return host + ("; amphora_ready_s, config_push_to_serving_ms and agent_pss_mib: lab "
                   "amphorae (docker containers), ours in the bench's lab (our image), "
                   "Octavia's in a second lab (Octavia's image, systemd as PID 1), boots "
                   "interleaved with the bare containers and ours, pushes one for one with ours, "
                   "both load balancers created by our controller, memory read in turn after "
                   "the pushes")


def bench_dir(root: Path, mode: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{mode}"
