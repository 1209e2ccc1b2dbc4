"""Bench results: the metrics, their summaries, the results file, and comparison to a baseline.

Every metric is measured several times and summarised by its median and spread (min, max, median
absolute deviation). Machines running the bench are shared and noisy, so two metrics are stated
against a reference measured in the same run, interleaved with them:

    data_plane_rps   / direct_rps          (the same load tool straight at one member)
    amphora_ready_s  / container_start_s   (a bare container of the same image)

and a baseline comparison uses those same-run ratios for them. Other metrics are compared by
median. A change is a ratio current/baseline of (value + floor), where a metric's floor is the
smallest amount that means anything (one error, 5 ms): it keeps 0 -> 1 error finite and
3 ms -> 4 ms from counting as a 33 % regression.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA = "amphora-harness.bench/1"


class ResultsError(ValueError):
    """A results file is not one this version can read."""


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    better: Literal["lower", "higher"]
    floor: float
    description: str
    reference: str | None = None  # the key of the same-run metric it is stated against
    gated: bool = True  # whether a regression fails --baseline (references measure the machine)


METRICS: dict[str, MetricSpec] = {
    "container_start_s": MetricSpec(
        "s", "lower", 0.05, "a bare container of the amphora image (none of an amphora's "
        "files or privileges): create and start, as the engine reports it running (the floor "
        "under amphora_ready_s)", gated=False),
    "amphora_ready_s": MetricSpec(
        "s", "lower", 0.05, "boot an amphora until GET /1.0/info answers over mutual TLS",
        reference="container_start_s"),
    "config_push_to_serving_ms": MetricSpec(
        "ms", "lower", 5.0, "upload a changed haproxy.cfg and reload, until a new connection "
        "through the VIP is served by the new configuration"),
    "reload_under_load_errors": MetricSpec(
        "errors", "lower", 1.0, "failed requests (socket errors, non-2xx/3xx) of one load run "
        "through the VIP during which the load balancer is reloaded repeatedly"),
    "failover_downtime_s[hard_kill]": MetricSpec(
        "s", "lower", 0.1, "active/standby: SIGKILL the MASTER; the longest time after it in "
        "which no answer arrived to the new connections sent through the VIP every 20 ms "
        "(harness.observe.traffic.Timeline.downtime)"),
    "failover_downtime_s[graceful_stop]": MetricSpec(
        "s", "lower", 0.1, "active/standby: graceful stop of the MASTER (keepalived says "
        "goodbye); the longest time after it in which no answer arrived (Timeline.downtime)"),
    "direct_rps": MetricSpec(
        "req/s", "higher", 1.0, "the load tool straight at one member (keep-alive)", gated=False),
    "data_plane_rps": MetricSpec(
        "req/s", "higher", 1.0, "the load tool through the VIP to that same member alone",
        reference="direct_rps"),
    "agent_api_latency_ms[info]": MetricSpec(
        "ms", "lower", 0.5, "GET /1.0/info through the driver client (mutual TLS; the "
        "connection is reused when the agent keeps it alive)"),
    "agent_api_latency_ms[upload]": MetricSpec(
        "ms", "lower", 1.0, "PUT a haproxy.cfg (the agent checks it with haproxy -c)"),
}


# The agent axis (harness.bench.agent_axis): each call for our agent and for Octavia's, both
# host processes; ours is stated against Octavia's, measured interleaved with it.
AGENT_CALLS = ("version", "info", "details", "upload", "cert_put", "cert_md5")
AGENT_CALL_DESCRIPTIONS = {
    "version": "GET /", "info": "GET /1.0/info", "details": "GET /1.0/details",
    "upload": "PUT /1.0/loadbalancer/{amphora}/{lb}/haproxy (a small valid haproxy.cfg)",
    "cert_put": "PUT /1.0/loadbalancer/{lb}/certificates/{name} (a key + certificate PEM)",
    "cert_md5": "GET /1.0/loadbalancer/{lb}/certificates/{name} (its md5sum)",
}


def agent_metric(agent: str, call: str) -> str:
    return f"agent_api_ms[{agent}:{call}]"


for _call, _what in AGENT_CALL_DESCRIPTIONS.items():
    METRICS[agent_metric("octavia", _call)] = MetricSpec(
        "ms", "lower", 0.5, f"{_what} to Octavia's own agent (a host process, gunicorn), "
        "the reference of our agent's same call", gated=False)
    METRICS[agent_metric("ours", _call)] = MetricSpec(
        "ms", "lower", 0.5, f"{_what} to our agent as a host process, through the driver's "
        "client, interleaved call for call with Octavia's agent",
        reference=agent_metric("octavia", _call))


# The agent axis's lab metrics (harness.bench.agent_axis): the same measurement on amphorae of
# Octavia's agent, in a lab of their own, interleaved with ours. Ours keep their plain keys (older
# results files compare with them); Octavia's carry the agent: lab_metric("octavia", metric).
LAB_AGENT_METRICS = ("amphora_ready_s", "config_push_to_serving_ms", "agent_pss_mib")


def lab_metric(agent: str, metric: str) -> str:
    return metric if agent == "ours" else f"{metric}[{agent}]"


METRICS[lab_metric("octavia", "amphora_ready_s")] = MetricSpec(
    "s", "lower", 0.05, "boot an amphora of Octavia's own agent (systemd as PID 1) until GET "
    "/1.0/info answers over mutual TLS; booted interleaved with the bare containers and our "
    "amphorae", reference="container_start_s", gated=False)
METRICS["agent_pss_mib"] = MetricSpec(
    "MiB", "lower", 1.0, "the agent's processes' proportional set size, summed, on the bench's "
    "amphora once it has served its load balancer's pushes (harness.bench.agent_memory)")
METRICS[lab_metric("octavia", "agent_pss_mib")] = MetricSpec(
    "MiB", "lower", 1.0, "agent_pss_mib of Octavia's own agent (its amphora-agent.service), "
    "on its amphora after its pushes, read in turn with ours", gated=False)
METRICS[lab_metric("octavia", "config_push_to_serving_ms")] = MetricSpec(
    "ms", "lower", 5.0, "config_push_to_serving_ms on an amphora of Octavia's own agent (its "
    "load balancer created by our controller, as the suites' --agent octavia do), pushes "
    "interleaved one for one with ours", gated=False)


@dataclass
class Samples:
    """The raw samples of one run by metric key, as they are taken."""

    by_key: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        if key not in METRICS:  # a typo would otherwise surface only when the results are written
            raise ValueError(f"unknown metric {key!r}")
        self.by_key.setdefault(key, []).append(float(value))


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median and spread of samples (at least one)."""
    if not samples:
        raise ValueError("no samples to summarise")
    values = [float(s) for s in samples]
    median = statistics.median(values)
    return {
        "n": len(values),
        "median": median,
        "min": min(values),
        "max": max(values),
        "mad": statistics.median(abs(v - median) for v in values),
        "samples": values,
    }


def ratio_samples(values: Sequence[float], references: Sequence[float]) -> list[float]:
    """value/reference per repetition when the runs were interleaved one for one; otherwise the
    ratio of the medians (one sample)."""
    if len(values) == len(references) and all(references):
        return [v / r for v, r in zip(values, references, strict=True)]
    reference = statistics.median(references)
    if not reference:
        raise ValueError("the reference median is 0; no ratio")
    return [statistics.median(values) / reference]


def metric_entries(samples: dict[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """The `metrics` object of a results file from raw samples by metric key."""
    unknown = sorted(set(samples) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics: {', '.join(unknown)}")
    entries = {}
    for key, values in samples.items():
        if not values:
            continue
        spec = METRICS[key]
        entry = {"unit": spec.unit, "better": spec.better, "description": spec.description,
                 **summarize(values), "reference": spec.reference, "ratio": None}
        if spec.reference and samples.get(spec.reference):
            entry["ratio"] = summarize(ratio_samples(values, samples[spec.reference]))
        entries[key] = entry
    return entries


def write_results(path: Path, results: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    return path


def read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read results {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path} is not a bench results file (schema {SCHEMA})")
    if not isinstance(data.get("metrics"), dict):
        raise ResultsError(f"{path} has no metrics")
    return data


# --- baseline comparison -----------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    key: str
    basis: str  # "median" or "ratio to <reference>"
    baseline: float
    current: float
    change: float  # (current + floor) / (baseline + floor)
    regressed: bool
    gated: bool

    @property
    def verdict(self) -> str:
        if self.regressed:
            return "REGRESSED" if self.gated else "worse (not gated)"
        return "ok"


def comparable(entry: dict[str, Any]) -> tuple[str, float]:
    """What a baseline comparison looks at: the same-run ratio if the metric has one."""
    if entry.get("ratio"):
        return f"ratio to {entry['reference']}", float(entry["ratio"]["median"])
    return "median", float(entry["median"])


def compare(current: dict[str, Any], baseline: dict[str, Any],
            threshold: float) -> list[Comparison]:
    """Compare every metric both results have. A metric regresses when it got worse by more
    than threshold (0.25 = 25 %): lower-is-better ones when change > 1 + threshold,
    higher-is-better ones when change < 1 / (1 + threshold)."""
    if threshold <= 0:
        raise ValueError("the threshold must be positive")
    comparisons = []
    for key, entry in current["metrics"].items():
        old = baseline["metrics"].get(key)
        spec = METRICS.get(key)
        if old is None or spec is None:
            continue
        basis, now = comparable(entry)
        old_basis, then = comparable(old)
        if basis != old_basis:  # one side lacks the reference run: compare medians
            basis, now, then = "median", float(entry["median"]), float(old["median"])
        floor = 0.0 if basis != "median" else spec.floor
        change = (now + floor) / (then + floor) if then + floor else float("inf")
        worse = change > 1 + threshold if spec.better == "lower" \
            else change < 1 / (1 + threshold)
        comparisons.append(Comparison(key, basis, then, now, change, worse, spec.gated))
    return comparisons


def regressions(comparisons: Sequence[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.regressed and c.gated]


def comparisons_json(comparisons: Sequence[Comparison], baseline: Path,
                     threshold: float) -> dict[str, Any]:
    return {"file": str(baseline), "threshold": threshold,
            "metrics": [asdict(c) | {"verdict": c.verdict} for c in comparisons]}
