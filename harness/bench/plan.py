"""What the bench measures, in which order and how many times, and the load balancer it
measures. (The metrics themselves, their units and floors: harness.bench.results.METRICS.)

One run, in order (each step repeated; counts from BenchSettings):
  0. with --agent ours,octavia, first the agent axis's API calls (harness.bench.agent_axis):
     every API call to our agent and to Octavia's, both host processes, interleaved
     (api_requests per call and agent);
  1. container_start_s and amphora_ready_s, interleaved (harness.bench.engine_timings): a bare
     container of the amphora image, then an amphora booted until its agent answers (repeats);
     with --agent ours,octavia on the docker provider, then an amphora of Octavia's agent in a
     second lab in each repetition too: amphora_ready_s[octavia] (systemd boots it: seconds);
  2. a SINGLE load balancer on the first amphora (one HTTP listener, one member), then
     agent_api_latency_ms, direct_rps / data_plane_rps, reload_under_load_errors,
     config_push_to_serving_ms (harness.bench.single_lb; push_repeats); with Octavia's agent
     in the lab, the same load balancer (our controller creates it) on its first amphora, with
     members of its lab, and the pushes take turns with ours: config_push_to_serving_ms[octavia];
     then agent_pss_mib, the agent's memory on that amphora (and agent_pss_mib[octavia] on
     Octavia's, read in turn; harness.bench.agent_memory; repeats). Octavia's lab is then taken
     down;
  3. failover_downtime_s (harness.bench.failover): per repetition a fresh active/standby pair, a
     recorder sending a new connection through the VIP every 20 ms, then the MASTER hard-killed
     or gracefully stopped.

Where the load comes from: wrk (harness.bench.wrk) on the host, one thread, a few dozen
kept-alive connections, reaching the VIP through the lab's vip bridge and the member through the
member bridge. The member server (one Python process) saturates well below what one wrk thread
sends, so wrk is not the bottleneck; the results file records wrk's own CPU use per run to show
it. The data plane's figure is stated as a ratio to the same tool straight at that same member,
the two runs interleaved, so a busy machine shows up in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from harness.lab.lab import LabMember
from harness.model.loadbalancer import (
    InsertHeader,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Pool,
    Topology,
)
from harness.model.loadbalancer import Member as LbMember

LISTENER_PORT = 80
MEMBER_SERVICE = "http"
FAILOVER_KINDS = ("hard_kill", "graceful_stop")


class BenchError(RuntimeError):
    """A measurement could not be taken; the message says which and why."""


@dataclass(frozen=True)
class BenchSettings:
    mode: str
    repeats: int  # container/amphora boots (each agent's), and direct/VIP load runs
    load_duration_s: int
    load_connections: int
    reload_runs: int
    reloads_per_run: int
    push_repeats: int  # config pushes per load balancer (ours, and Octavia's agent's)
    api_requests: int
    failover_repeats: int  # per kind (hard kill, graceful stop)
    # The agent axis (harness.bench.agent_axis) runs when Octavia's agent is among these: its
    # API calls on this host, and (docker provider) its amphorae in a lab.
    agents: tuple[str, ...] = ("ours",)


QUICK = BenchSettings(mode="quick", repeats=2, load_duration_s=4, load_connections=16,
                      reload_runs=1, reloads_per_run=4, push_repeats=4, api_requests=40,
                      failover_repeats=1)
FULL = BenchSettings(mode="full", repeats=5, load_duration_s=10, load_connections=32,
                     reload_runs=3, reloads_per_run=10, push_repeats=10, api_requests=300,
                     failover_repeats=3)


def lb_member(member: LabMember) -> LbMember:
    """A lab member as a pool member of the measured load balancer."""
    return LbMember(address=str(member.address), port=member.port(MEMBER_SERVICE))


def http_lb(vip: IPv4Address, members: list[LabMember],
            topology: Topology = Topology.SINGLE) -> LoadBalancer:
    """The measured load balancer: one HTTP listener on LISTENER_PORT over members."""
    pool = Pool(members=[lb_member(m) for m in members])
    listener = Listener(protocol=ListenerProtocol.HTTP, port=LISTENER_PORT, pools=[pool],
                        default_pool_id=pool.id, insert_headers=[InsertHeader.X_FORWARDED_FOR])
    return LoadBalancer(vip_address=str(vip), topology=topology, listeners=[listener])


def vip_url(lb: LoadBalancer) -> str:
    return f"http://{lb.vip_address}:{LISTENER_PORT}/"
