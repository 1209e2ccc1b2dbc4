"""agent_pss_mib (harness.bench.agent_memory): the reading's script and its parsing, each agent's
readings in turn, and its place in the agents table. The reading on live amphorae runs in the
bench (CI's quick bench with --agent ours,octavia)."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from harness.bench.agent_axis import IN_LAB, side_by_side
from harness.bench.agent_memory import (
    AGENT_PIDS,
    PSS_SCRIPT,
    AgentMemoryError,
    agent_pss_mib,
    measure_agent_memory,
    parse_pss,
)
from harness.bench.results import Samples, lab_metric, metric_entries
from harness.lab.providers.base import ExecResult


def test_pss_lines_are_parsed_once_per_pid() -> None:
    output = "47 42522 kB\n52 29021 kB\nnoise\n47 42522 kB\n60  37321 kB\n"
    assert parse_pss(output) == {47: 42522, 52: 29021}


def test_the_script_reads_this_process_pss_from_smaps_rollup() -> None:
    # The real script, on this host, with "the agent" being this test's own process.
    script = PSS_SCRIPT.format(pids="echo $PPID")
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            check=False).stdout
    (pid, pss_kb), = parse_pss(output).items()
    assert pid == os.getpid()
    assert pss_kb > 1000  # a Python interpreter holds megabytes


class FakeProvider:
    """exec answers per amphora with canned output, and records the scripts it ran."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.ran: list[tuple[str, str]] = []

    def exec(self, node, argv: list[str]) -> ExecResult:
        self.ran.append((node, argv[-1]))
        return ExecResult(0, self.outputs[node])


def amphora(name: str) -> SimpleNamespace:
    return SimpleNamespace(id=name, node=name)


def test_each_agent_is_found_its_own_way_and_summed_in_mib() -> None:
    provider = FakeProvider({"a": "10 1024 kB\n", "b": "1 1024 kB\n2 2048 kB\n"})
    assert agent_pss_mib(provider, amphora("a"), "ours") == 1.0
    assert agent_pss_mib(provider, amphora("b"), "octavia") == 3.0
    assert AGENT_PIDS["ours"] in provider.ran[0][1]
    assert "amphora-agent.service" in provider.ran[1][1]


def test_no_agent_process_is_an_error_naming_the_amphora() -> None:
    provider = FakeProvider({"a": "sh: ss: not found\n"})
    with pytest.raises(AgentMemoryError, match="ours's agent found in amphora a"):
        agent_pss_mib(provider, amphora("a"), "ours")


def test_readings_take_turns_and_pair_in_the_agents_table() -> None:
    provider = FakeProvider({"ours": "1 30720 kB\n", "octavia": "1 102400 kB\n2 40960 kB\n"})
    samples = Samples()
    measure_agent_memory(provider, {"ours": amphora("ours"), "octavia": amphora("octavia")},
                         2, samples, lambda _: None)
    assert [node for node, _ in provider.ran] == ["ours", "octavia", "ours", "octavia"]
    assert samples.by_key == {"agent_pss_mib": [30.0, 30.0],
                              lab_metric("octavia", "agent_pss_mib"): [140.0, 140.0]}
    (row,) = side_by_side(metric_entries(samples.by_key))
    assert row == {"measure": "agent_pss_mib", "where": IN_LAB, "unit": "MiB",
                   "ours_p50": 30.0, "octavia_p50": 140.0, "ratio": 30.0 / 140.0}
