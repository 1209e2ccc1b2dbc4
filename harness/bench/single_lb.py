"""The metrics of a SINGLE load balancer on one amphora (one HTTP listener, one member):
agent_api_latency_ms, direct_rps / data_plane_rps, reload_under_load_errors and
config_push_to_serving_ms.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from harness.bench.plan import (
    MEMBER_SERVICE,
    BenchError,
    BenchSettings,
    http_lb,
    lb_member,
    vip_url,
)
from harness.bench.results import Samples
from harness.bench.wrk import LoadRun, Wrk
from harness.drivers.controller import LoadBalancerController
from harness.lab.lab import Lab, LabAmphora, LabMember
from harness.observe.vip import ask
from harness.polling import wait_until
from harness.render.amphora_configs import render_haproxy

SERVING_TIMEOUT_S = 20.0
SERVING_POLL_S = 0.2
# A push is timed to within this poll of the first answer from the new member.
PUSH_POLL_INTERVAL_S = 0.005
# Requests before the timed ones: the first opens the TLS connection the rest reuse.
AGENT_WARMUP_REQUESTS = 5
# A reloader still running this long after its load run ended is given up on.
RELOADER_GRACE_S = 60


def _timed_ms(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


class SingleLoadBalancer:
    """The load balancer, created on the amphora as a controller creates it (VIP plugged, member
    network plugged, config pushed), serving through the VIP; its measurements add samples and
    keep each wrk run in load_runs."""

    def __init__(self, lab: Lab, amphora: LabAmphora, members: list[LabMember],
                 settings: BenchSettings, samples: Samples,
                 say: Callable[[str], None]) -> None:
        self.amphora = amphora
        self.members = members
        self.settings = settings
        self.samples = samples
        self.say = say
        self.load_runs: list[LoadRun] = []
        say("load balancer: plug, push, start")
        vip = lab.allocate_vip()
        lab.plug_vip(amphora, vip)
        lab.plug_member_network(amphora)
        self.lb = http_lb(vip, members[:1])
        self.controller = LoadBalancerController(self.lb, [amphora.client])
        self.controller.create()
        self.url = vip_url(self.lb)
        wait_until(lambda: ask(self.url).served, SERVING_TIMEOUT_S, f"an answer from {self.url}",
                   SERVING_POLL_S, BenchError)

    def measure_agent_api(self) -> None:
        client = self.amphora.client
        requests = self.settings.api_requests
        self.say(f"agent API: {requests} GET /1.0/info")
        for _ in range(AGENT_WARMUP_REQUESTS):
            client.get_info()
        for _ in range(requests):
            self.samples.add("agent_api_latency_ms[info]", _timed_ms(client.get_info))
        config = render_haproxy(self.lb, self.amphora.id)
        uploads = max(3, requests // 10)
        self.say(f"agent API: {uploads} PUT haproxy.cfg")
        for _ in range(uploads):
            self.samples.add("agent_api_latency_ms[upload]",
                             _timed_ms(lambda: client.upload_config(self.lb.id, config)))

    def measure_throughput(self, wrk: Wrk) -> None:
        """wrk straight at the member, then through the VIP, alternating."""
        member = self.members[0]
        direct = f"http://{member.address}:{member.port(MEMBER_SERVICE)}/"
        s = self.settings
        for n in range(s.repeats):
            self.say(f"load {n + 1}/{s.repeats}: wrk {s.load_duration_s}s direct, then VIP")
            for key, url, target in (("direct_rps", direct, "direct"),
                                     ("data_plane_rps", self.url, "vip")):
                run = wrk.run(url, s.load_duration_s, s.load_connections, target)
                self.load_runs.append(run)
                self.samples.add(key, run.rps)

    def measure_reload_under_load(self, wrk: Wrk) -> None:
        """Reload the load balancer repeatedly (an update through the API) during a load run."""
        s = self.settings
        spacing = s.load_duration_s / (s.reloads_per_run + 1)
        for n in range(s.reload_runs):
            self.say(f"reloads under load {n + 1}/{s.reload_runs}: "
                     f"{s.reloads_per_run} reloads in {s.load_duration_s}s")
            failures: list[BaseException] = []

            def reload_repeatedly(failures: list[BaseException] = failures) -> None:
                try:
                    for _ in range(s.reloads_per_run):
                        time.sleep(spacing)
                        self.controller.update()
                except Exception as exc:  # reported after the load run
                    failures.append(exc)

            reloader = threading.Thread(target=reload_repeatedly, daemon=True)
            reloader.start()
            run = wrk.run(self.url, s.load_duration_s, s.load_connections, "vip-reloading")
            reloader.join(timeout=s.load_duration_s + RELOADER_GRACE_S)
            if failures:
                raise BenchError(f"reload under load: {failures[0]}")
            self.load_runs.append(run)
            self.samples.add("reload_under_load_errors", run.failed)

    def measure_config_push(self) -> None:
        measure_config_pushes({"config_push_to_serving_ms": self}, self.settings.push_repeats,
                              self.samples, self.say)

    def push_to_serving_ms(self, n: int) -> float:
        """Push n: switch the pool to the other member; ms until a new connection through the
        VIP reaches it."""
        target = self.members[(n + 1) % 2]
        self.lb.listeners[0].pools[0].members = [lb_member(target)]
        started = time.monotonic()
        self.controller.update()
        wait_until(lambda: ask(self.url).member == target.id, SERVING_TIMEOUT_S,
                   f"push {n + 1}: an answer from {target.name}", PUSH_POLL_INTERVAL_S,
                   BenchError)
        return (time.monotonic() - started) * 1000


def measure_config_pushes(loadbalancers: dict[str, SingleLoadBalancer], pushes: int,
                          samples: Samples, say: Callable[[str], None]) -> None:
    """`pushes` pushes on each load balancer (metric key -> load balancer), taking turns push by
    push, so that pair n met the same machine."""
    for n in range(pushes):
        for key, loadbalancer in loadbalancers.items():
            say(f"config push {n + 1}/{pushes}" + (f" ({key})" if len(loadbalancers) > 1 else ""))
            samples.add(key, loadbalancer.push_to_serving_ms(n))
