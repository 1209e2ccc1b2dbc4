"""agent_pss_mib: how much memory an amphora's agent holds, once it has served a load balancer.

The figure is the proportional set size (PSS) of the agent's processes, summed: every page a
process maps privately counts whole, every page it shares counts divided by the number of
processes sharing it, so the agent's processes together are charged each page once. Which
processes are the agent differs by agent:

- Octavia's agent is a systemd unit (amphora-agent.service): gunicorn's master and worker, its
  health sender and what else runs in the unit's cgroup;
- ours is the one process listening on the agent's port (its heartbeat, restarter and request
  handlers are threads; keepalived, its child, and haproxy are the data plane, as in Octavia's
  image, where they are units of their own).

Shared pages are divided among every process of the amphora that maps them, not only the
agent's: ours shares the python3 executable's pages with the image's syslog receiver (also
Python), Octavia's with its image's prometheus-proxy; a few hundred kB either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from harness.bench.results import Samples, lab_metric
from harness.lab.constants import AGENT_PORT
from harness.lab.lab import LabAmphora
from harness.lab.octavia_agent import OCTAVIA
from harness.lab.providers.base import Provider

METRIC = "agent_pss_mib"
# Shell commands printing the agent's process ids, one per line, run inside the amphora.
AGENT_PIDS = {
    "ours": f"ss -Hltnp 'sport = :{AGENT_PORT}' | grep -o 'pid=[0-9]*' | cut -d= -f2",
    OCTAVIA: "grep -l '/amphora-agent.service' /proc/[0-9]*/cgroup | cut -d/ -f3",
}
# Each agent process's PSS line (kB), prefixed with its pid; a process that ended in between
# prints nothing.
PSS_SCRIPT = ("for pid in $({pids}); do "
              "sed -n \"s/^Pss: */$pid /p\" /proc/$pid/smaps_rollup 2>/dev/null; done")
_PSS_LINE = re.compile(r"^(\d+) (\d+) kB$")


class AgentMemoryError(RuntimeError):
    """The agent's processes could not be found or read."""


def parse_pss(output: str) -> dict[int, int]:
    """{pid: PSS in kB} from PSS_SCRIPT's output (a pid once, whatever else the output holds)."""
    found = {}
    for line in output.splitlines():
        match = _PSS_LINE.match(line.strip())
        if match:
            found[int(match[1])] = int(match[2])
    return found


def agent_pss_mib(provider: Provider, amphora: LabAmphora, agent: str) -> float:
    """The PSS of `agent`'s processes in `amphora`, in MiB."""
    argv = ["sh", "-c", PSS_SCRIPT.format(pids=AGENT_PIDS[agent])]
    output = provider.exec(amphora.node, argv).output
    by_pid = parse_pss(output)
    if not by_pid:
        raise AgentMemoryError(f"no process of {agent}'s agent found in amphora {amphora.id} "
                               f"(output: {output.strip()[:300]!r})")
    return sum(by_pid.values()) / 1024


def measure_agent_memory(provider: Provider, amphorae: dict[str, LabAmphora], repeats: int,
                         samples: Samples, say: Callable[[str], None]) -> None:
    """`repeats` readings of each agent's PSS (agent -> its amphora, all of `provider`), agents
    taking turns."""
    say(f"agent memory: {repeats} readings of {', '.join(amphorae)}")
    for _ in range(repeats):
        for agent, amphora in amphorae.items():
            samples.add(lab_metric(agent, METRIC), agent_pss_mib(provider, amphora, agent))
