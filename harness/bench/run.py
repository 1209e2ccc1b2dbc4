"""amphora-harness bench: measure every metric of the design notes on live amphorae.

Where the load comes from: wrk (Debian's package) on the host, one thread, a few dozen kept-alive
connections, reaching the VIP through the lab's vip bridge and the member through the member
bridge. The member server (one Python process) saturates well below what one wrk thread sends,
so wrk is not the bottleneck; the results file records wrk's own CPU use per run to show it. The
data plane's figure is stated as a ratio to the same tool straight at that same member, the two
runs interleaved, so a busy machine shows up in both.

One run, in order (each step repeated; counts from BenchSettings):
  1. container_start_s and amphora_ready_s, interleaved: a bare container of the amphora image,
     then an amphora booted until its agent answers;
  2. a SINGLE load balancer on the first amphora (one HTTP listener, one member), then
     agent_api_latency_ms, direct_rps / data_plane_rps, reload_under_load_errors,
     config_push_to_serving_ms;
  3. failover_downtime_s: per repetition a fresh active/standby pair, a recorder sending a new
     connection through the VIP every 20 ms, then the MASTER hard-killed or gracefully stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness.bench.results import SCHEMA, metric_entries
from harness.drivers.controller import LoadBalancerController
from harness.lab.addressing import NODE_HOSTS
from harness.lab.constants import FAILOVER_VRRP
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.lab.providers.base import LAB_LABEL, OWNER_LABEL, ROLE_LABEL, Provider
from harness.model.loadbalancer import (
    InsertHeader,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Pool,
    Topology,
)
from harness.model.loadbalancer import Member as LbMember
from harness.observe.plots import plot_timeline
from harness.observe.traffic import Timeline, TimelineRecorder
from harness.observe.vip import ask, settled_master
from harness.paths import REPO_ROOT
from harness.polling import wait_until
from harness.render.amphora_configs import render_haproxy

LISTENER_PORT = 80
MEMBER_SERVICE = "http"
# The wrk script: after the run, one line of JSON with counts and latency percentiles (µs).
WRK_REPORT_MARK = "AMPHORA_HARNESS_WRK "
WRK_PERCENTILES = (*range(1, 100), 99.5, 99.9, 99.99)
WRK_SCRIPT = """
done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({@PERCENTILES@}) do
    p[#p + 1] = string.format('"%s":%d', tostring(q), latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format('@MARK@{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%f,"stdev":%f,"max":%d,"percentiles":{%s}}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency.max, table.concat(p, ",")))
end
""".replace("@PERCENTILES@", ", ".join(map(str, WRK_PERCENTILES))).replace("@MARK@",
                                                                        WRK_REPORT_MARK)
WRK_TIMEOUT_MARGIN_S = 30
# Active/standby timers of the failover runs (what the failover suite uses too): adverts every
# second, the haproxy check every 2 s, two failures to give mastership up.
RECORDER_INTERVAL_S = 0.02
VRRP_TIMERS = {name: getattr(FAILOVER_VRRP, name)
               for name in ("advert_int", "check_interval", "check_fall", "check_rise")}
RECORDER_TIMEOUT_S = 1.0
PAIR_SETTLE_TIMEOUT_S = 40.0
FAILOVER_WAIT_S = 30.0
SERVING_TIMEOUT_S = 20.0
PUSH_POLL_INTERVAL_S = 0.005
AGENT_WARMUP_REQUESTS = 5


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which and why."""


@dataclass(frozen=True)
class BenchSettings:
    mode: str
    repeats: int  # container/amphora boots, and direct/VIP load runs
    load_duration_s: int
    load_connections: int
    reload_runs: int
    reloads_per_run: int
    push_repeats: int
    api_requests: int
    failover_repeats: int  # per kind (hard kill, graceful stop)


QUICK = BenchSettings(mode="quick", repeats=2, load_duration_s=4, load_connections=16,
                      reload_runs=1, reloads_per_run=4, push_repeats=4, api_requests=40,
                      failover_repeats=1)
FULL = BenchSettings(mode="full", repeats=5, load_duration_s=10, load_connections=32,
                     reload_runs=3, reloads_per_run=10, push_repeats=10, api_requests=300,
                     failover_repeats=3)


# --- wrk -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadRun:
    """One wrk run: what it achieved, its failures, its latency percentiles, and how busy wrk
    itself was (CPU seconds per second of run; 1.0 per thread would mean wrk is the limit)."""

    target: str
    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_ms: dict[str, float]  # percentile -> ms
    wrk_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def parse_wrk_report(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith(WRK_REPORT_MARK):
            return json.loads(line[len(WRK_REPORT_MARK):])
    raise BenchError(f"wrk printed no report: {output.strip()[-300:]}")


def load_run_from_report(target: str, report: dict[str, Any], wrk_cpu: float) -> LoadRun:
    percentiles = report["latency_us"]["percentiles"]
    return LoadRun(
        target=target, requests=int(report["requests"]),
        duration_s=report["duration_us"] / 1e6, errors=dict(report["errors"]),
        latency_ms={p: us / 1000 for p, us in percentiles.items()}, wrk_cpu=wrk_cpu,
    )


class Wrk:
    """wrk on the host, with a script that reports in JSON."""

    def __init__(self, threads: int = 1) -> None:
        if shutil.which("wrk") is None:
            raise BenchError("wrk is not installed (apt-get install wrk)")
        self.threads = threads
        self._script = Path(tempfile.mkstemp(prefix="amphora-harness-wrk-", suffix=".lua")[1])
        self._script.write_text(WRK_SCRIPT)

    def close(self) -> None:
        self._script.unlink(missing_ok=True)

    @staticmethod
    def version() -> str:
        result = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        return (result.stdout + result.stderr).splitlines()[0].strip()

    def run(self, url: str, duration_s: int, connections: int, target: str) -> LoadRun:
        argv = ["wrk", f"-t{self.threads}", f"-c{connections}", f"-d{duration_s}s",
                "--timeout", "2s", "-s", str(self._script), url]
        # Only wrk is waited for in between, so the children's CPU time is wrk's.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Lab traffic goes straight onto the lab's bridges, never through a proxy.
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=duration_s + WRK_TIMEOUT_MARGIN_S)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise BenchError(f"wrk {url}: {result.stderr.strip() or result.stdout.strip()}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return load_run_from_report(target, parse_wrk_report(result.stdout), cpu / wall)


# --- the run -----------------------------------------------------------------------------------

def _git_revision() -> str | None:
    result = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


class Bench:
    """One bench run on a provider (docker: the bare-container floor uses the engine directly).
    Progress goes to `say`; samples accumulate in `samples`, other findings in `facts`."""

    def __init__(self, provider: Provider, settings: BenchSettings, out_dir: Path,
                 say: Callable[[str], None] = print) -> None:
        self.provider = provider
        self.settings = settings
        self.out_dir = out_dir
        self.say = say
        self.samples: dict[str, list[float]] = {}
        self.load_runs: list[LoadRun] = []
        self.timelines: dict[str, Timeline] = {}
        self.facts: dict[str, Any] = {}
        self._images: dict[str, str] = {}

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)

    # --- the whole run ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_before = os.getloadavg()
        for name in ("amphora", "member"):
            self.say(f"images: {name}")
            self._images[name] = self.provider.ensure_image(name)
        wrk = Wrk()
        try:
            with Lab(self.provider, amphora_image=self._images["amphora"],
                     member_image=self._images["member"],
                     results_dir=self.out_dir / "labs") as lab:
                amphora = self.measure_boots(lab)
                self.say("members")
                members = lab.add_members(2)
                lb = self.single_load_balancer(lab, amphora, members[0])
                self.facts["versions"] = self.versions(lab, amphora, wrk)
                self.measure_agent_api(amphora, lb)
                self.measure_throughput(wrk, lb, members[0])
                self.measure_reload_under_load(wrk, amphora, lb)
                self.measure_config_push(amphora, lb, members)
                # The single amphora's part is done; its CPU is the pairs' now.
                self.provider.kill(amphora.node)
                for kind in ("hard_kill", "graceful_stop"):
                    for n in range(self.settings.failover_repeats):
                        self.measure_failover(lab, members[0], kind, n)
        finally:
            wrk.close()
        return self.results(started, load_before)

    def results(self, started: float, load_before: tuple[float, ...]) -> dict[str, Any]:
        runs = [asdict(r) | {"rps": r.rps} for r in self.load_runs]
        return {
            "schema": SCHEMA,
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "mode": self.settings.mode,
            "settings": asdict(self.settings),
            "host": {
                "cpus": os.cpu_count(), "kernel": platform.release(),
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
            },
            "versions": self.facts.get("versions", {}),
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
            "failover": {"vrrp": VRRP_TIMERS, "recorder_interval_s": RECORDER_INTERVAL_S,
                         "recorder_timeout_s": RECORDER_TIMEOUT_S},
            "metrics": metric_entries(self.samples),
            "load_runs": runs,
        }

    # --- boots ---------------------------------------------------------------------------

    def measure_boots(self, lab: Lab) -> LabAmphora:
        """Interleaved: a bare container of the amphora image, then an amphora. Returns the
        first amphora (it carries the load balancer); the others are killed once measured."""
        first: LabAmphora | None = None
        for n in range(self.settings.repeats):
            self.say(f"boots {n + 1}/{self.settings.repeats}: bare container, amphora")
            self.add("container_start_s", self.bare_container_start(lab, n))
            amphora = lab.add_amphora()
            self.add("amphora_ready_s", amphora.ready_s)
            if first is None:
                first = amphora
            else:
                self.provider.kill(amphora.node)
        assert first is not None
        return first

    def bare_container_start(self, lab: Lab, n: int) -> float:
        """Create and start a container of the amphora image that runs nothing (sleep), on the
        management network like an amphora; seconds until the engine reports it started."""
        client = getattr(self.provider, "client", None)
        if client is None:
            raise BenchError(f"container_start_s needs the docker provider, "
                             f"not {self.provider.name}")
        api = client.api
        network = lab.networks["lb-mgmt"]
        # From the top of the node range: the lab hands out node addresses from the bottom.
        address = lab.plan("lb-mgmt").node_address(len(NODE_HOSTS) - 1 - n)
        name = f"amphora-harness-{lab.id}-bare-{n}"
        started = time.monotonic()
        container = api.create_container(
            self._images["amphora"], entrypoint=["sleep", "infinity"], name=name,
            labels={LAB_LABEL: lab.id, OWNER_LABEL: getattr(self.provider, "owner", ""),
                    ROLE_LABEL: "bare"},
            host_config=api.create_host_config(network_mode=network.name),
            networking_config=api.create_networking_config(
                {network.name: api.create_endpoint_config(ipv4_address=str(address))}),
        )
        api.start(container["Id"])
        elapsed = time.monotonic() - started
        api.remove_container(container["Id"], force=True)
        return elapsed

    # --- a single load balancer ----------------------------------------------------------

    def single_load_balancer(self, lab: Lab, amphora: LabAmphora,
                             member: LabMember) -> LoadBalancer:
        self.say("load balancer: plug, push, start")
        vip = lab.allocate_vip()
        lab.plug_vip(amphora, vip)
        lab.plug_member_network(amphora)
        lb = _http_lb(vip, [member])
        LoadBalancerController(lb, [amphora.client]).create()
        self.wait_serving(_url(lb.vip_address))
        return lb

    def wait_serving(self, url: str) -> None:
        wait_until(lambda: ask(url).served, SERVING_TIMEOUT_S, f"an answer from {url}", 0.2,
                   BenchError)

    def versions(self, lab: Lab, amphora: LabAmphora, wrk: Wrk) -> dict[str, Any]:
        info = amphora.client.get_info()
        keepalived = self.provider.exec(amphora.node, ["keepalived", "--version"]).output
        engine = getattr(self.provider, "client", None)
        return {
            "haproxy": info.get("haproxy_version"),
            "keepalived": keepalived.splitlines()[0].strip() if keepalived else None,
            "agent": {"api_version": info.get("api_version"), "source": _git_revision()},
            "images": dict(self._images),
            "wrk": wrk.version(),
            "engine": engine.version().get("Version") if engine else self.provider.name,
            "python": platform.python_version(),
        }

    # --- agent API -------------------------------------------------------------------------

    def measure_agent_api(self, amphora: LabAmphora, lb: LoadBalancer) -> None:
        self.say(f"agent API: {self.settings.api_requests} GET /1.0/info")
        client = amphora.client
        for _ in range(AGENT_WARMUP_REQUESTS):
            client.get_info()
        for _ in range(self.settings.api_requests):
            self.add("agent_api_latency_ms[info]", _timed_ms(client.get_info))
        config = render_haproxy(lb, amphora.id)
        uploads = max(3, self.settings.api_requests // 10)
        self.say(f"agent API: {uploads} PUT haproxy.cfg")
        for _ in range(uploads):
            self.add("agent_api_latency_ms[upload]",
                     _timed_ms(lambda: client.upload_config(lb.id, config)))

    # --- throughput --------------------------------------------------------------------------

    def measure_throughput(self, wrk: Wrk, lb: LoadBalancer, member: LabMember) -> None:
        direct = f"http://{member.address}:{member.port(MEMBER_SERVICE)}/"
        through_vip = _url(lb.vip_address)
        s = self.settings
        for n in range(s.repeats):
            self.say(f"load {n + 1}/{s.repeats}: wrk {s.load_duration_s}s direct, then VIP")
            for key, url, target in (("direct_rps", direct, "direct"),
                                     ("data_plane_rps", through_vip, "vip")):
                run = wrk.run(url, s.load_duration_s, s.load_connections, target)
                self.load_runs.append(run)
                self.add(key, run.rps)

    def measure_reload_under_load(self, wrk: Wrk, amphora: LabAmphora, lb: LoadBalancer) -> None:
        s = self.settings
        controller = LoadBalancerController(lb, [amphora.client])
        spacing = s.load_duration_s / (s.reloads_per_run + 1)
        for n in range(s.reload_runs):
            self.say(f"reloads under load {n + 1}/{s.reload_runs}: "
                     f"{s.reloads_per_run} reloads in {s.load_duration_s}s")
            failures: list[BaseException] = []

            def reload_repeatedly(failures: list[BaseException] = failures) -> None:
                try:
                    for _ in range(s.reloads_per_run):
                        time.sleep(spacing)
                        controller.update()
                except Exception as exc:  # reported after the load run
                    failures.append(exc)

            reloader = threading.Thread(target=reload_repeatedly, daemon=True)
            reloader.start()
            run = wrk.run(_url(lb.vip_address), s.load_duration_s, s.load_connections,
                          "vip-reloading")
            reloader.join(timeout=s.load_duration_s + 60)
            if failures:
                raise BenchError(f"reload under load: {failures[0]}")
            self.load_runs.append(run)
            self.add("reload_under_load_errors", run.failed)

    # --- config push -------------------------------------------------------------------------

    def measure_config_push(self, amphora: LabAmphora, lb: LoadBalancer,
                            members: list[LabMember]) -> None:
        """Switch the pool between two members; time until new connections reach the new one."""
        controller = LoadBalancerController(lb, [amphora.client])
        pool = lb.listeners[0].pools[0]
        url = _url(lb.vip_address)
        for n in range(self.settings.push_repeats):
            target = members[(n + 1) % 2]
            self.say(f"config push {n + 1}/{self.settings.push_repeats}")
            pool.members = [_lb_member(target)]
            started = time.monotonic()
            controller.update()
            wait_until(lambda t=target: ask(url).member == t.id,
                       SERVING_TIMEOUT_S, f"push {n + 1}: an answer from {target.name}",
                       PUSH_POLL_INTERVAL_S, BenchError)
            self.add("config_push_to_serving_ms", (time.monotonic() - started) * 1000)

    # --- failover ------------------------------------------------------------------------------

    def measure_failover(self, lab: Lab, member: LabMember, kind: str, n: int) -> None:
        self.say(f"failover {kind} {n + 1}/{self.settings.failover_repeats}: booting a pair")
        pair = lab.add_amphorae(2, topology=Topology.ACTIVE_STANDBY.value)
        vip = lab.allocate_vip()
        ports = []
        for amphora in pair:
            lab.plug_member_network(amphora)
            ports.append(lab.attach_vip_port(amphora))
        lb = _http_lb(vip, [member], topology=Topology.ACTIVE_STANDBY)
        LoadBalancerController(lb, [a.client for a in pair],
                               vrrp_group=FAILOVER_VRRP).create(ports)
        url = _url(lb.vip_address)
        master_id = settled_master(url, PAIR_SETTLE_TIMEOUT_S, error=BenchError)
        master = next(a for a in pair if a.id == master_id)
        self.say(f"failover {kind} {n + 1}/{self.settings.failover_repeats}: "
                 f"{'killing' if kind == 'hard_kill' else 'stopping'} the MASTER")
        with TimelineRecorder(url, interval=RECORDER_INTERVAL_S, timeout=RECORDER_TIMEOUT_S,
                              max_duration=FAILOVER_WAIT_S + 30) as recorder:
            time.sleep(1.0)
            fault_at = recorder.now()
            recorder.mark(f"{kind.replace('_', ' ')} MASTER")
            if kind == "hard_kill":
                self.provider.kill(master.node)
            else:
                self.provider.stop(master.node)
            survivor = next(a for a in pair if a is not master)
            recovered = recorder.wait_until(
                lambda t: any(s.ok and s.sent_at > fault_at and s.amphora == survivor.id
                              for s in t.samples), FAILOVER_WAIT_S)
            time.sleep(1.0)
        timeline = recorder.snapshot()
        if not recovered:
            raise BenchError(f"failover {kind}: the BACKUP did not take over within "
                             f"{FAILOVER_WAIT_S:.0f}s")
        self.add(f"failover_downtime_s[{kind}]", timeline.downtime(fault_at))
        self.timelines.setdefault(kind, timeline)
        for amphora in pair:  # their part is done; free the CPU for what follows
            with contextlib.suppress(Exception):
                self.provider.kill(amphora.node)

    # --- artifacts ----------------------------------------------------------------------------

    def save_timelines(self) -> list[Path]:
        paths = []
        for kind, timeline in self.timelines.items():
            timeline.write_json(self.out_dir / f"failover-{kind}.json")
            paths.append(plot_timeline(timeline, self.out_dir / f"failover-{kind}.png",
                                       f"failover, {kind.replace('_', ' ')} of the MASTER"))
        return paths


def _timed_ms(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _url(vip: str) -> str:
    return f"http://{vip}:{LISTENER_PORT}/"


def _lb_member(member: LabMember) -> LbMember:
    return LbMember(address=str(member.address), port=member.port(MEMBER_SERVICE))


def _http_lb(vip: IPv4Address, members: list[LabMember],
             topology: Topology = Topology.SINGLE) -> LoadBalancer:
    pool = Pool(members=[_lb_member(m) for m in members])
    listener = Listener(protocol=ListenerProtocol.HTTP, port=LISTENER_PORT, pools=[pool],
                        default_pool_id=pool.id, insert_headers=[InsertHeader.X_FORWARDED_FOR])
    return LoadBalancer(vip_address=str(vip), topology=topology, listeners=[listener])


def bench_dir(root: Path, mode: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{mode}"
