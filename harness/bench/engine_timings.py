"""How long nodes take to come up: container_start_s, a bare container of the amphora image
(the floor set by the engine), and amphora_ready_s, an amphora booted until its agent answers
(harness.lab measures it). Both boot through the provider, interleaved, so that a busy machine
slows both alike and their same-run ratio survives it. With Octavia's agent on the agent axis,
amphora_ready_s[octavia] joins them: an amphora of its lab after ours, in every repetition.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.bench.results import Samples, lab_metric
from harness.lab.addressing import NODE_HOSTS
from harness.lab.lab import Lab, LabAmphora
from harness.lab.providers.base import NodeSpec


def measure_boots(lab: Lab, image: str, repeats: int, samples: Samples,
                  say: Callable[[str], None],
                  others: dict[str, Lab] | None = None) -> dict[str, LabAmphora]:
    """Boot a bare container, then an amphora, `repeats` times; with `others` (agent -> a lab
    whose amphorae run that agent: harness.bench.agent_axis), an amphora of each of those after
    ours in every repetition, so all meet the same machine. Returns each agent's first amphora
    (it carries a load balancer next); the other nodes are killed once measured, to leave the
    CPU to what follows (their labs remove them at their end)."""
    labs = {"ours": lab, **(others or {})}
    first: dict[str, LabAmphora] = {}
    for n in range(repeats):
        say(f"boots {n + 1}/{repeats}: bare container, amphora"
            + "".join(f", amphora of {agent}'s agent" for agent in others or {}))
        samples.add("container_start_s", bare_container_start(lab, image, n))
        for agent, agent_lab in labs.items():
            amphora = agent_lab.add_amphora()
            samples.add(lab_metric(agent, "amphora_ready_s"), amphora.ready_s)
            if agent in first:
                agent_lab.provider.kill(amphora.node)
            else:
                first[agent] = amphora
    if not first:
        raise ValueError("measure_boots needs at least one repetition")
    return first


def bare_container_start(lab: Lab, image: str, n: int) -> float:
    """Seconds until the provider reports a node of the amphora image started that has none of
    an amphora's files or data-plane privileges, on the management network like an amphora.
    It is killed at once: what it runs does not matter, only that the engine started it."""
    network = lab.networks["lb-mgmt"]
    spec = NodeSpec(lab_id=lab.id, role="bare", name=f"amphora-harness-{lab.id}-bare-{n}",
                    hostname=f"bare-{n}", image=image, network=network,
                    # From the top of the node range: the lab hands out node addresses from
                    # the bottom.
                    address=lab.plan("lb-mgmt").node_address(len(NODE_HOSTS) - 1 - n))
    started = time.monotonic()
    node = lab.provider.boot(spec)
    elapsed = time.monotonic() - started
    lab.provider.kill(node)
    return elapsed
