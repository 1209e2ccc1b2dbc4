"""--diff-configs: both drivers' haproxy.cfg for the same model, side by side
(harness.drivers.config_diff), and the limits the lab puts on Octavia's driver, announced."""

from __future__ import annotations

import warnings

import pytest

from harness.drivers.config_diff import ConfigDiffLog, RecordingDriver, side_by_side
from harness.drivers.controller import LoadBalancerController
from harness.drivers.octavia_driver import (
    AMPHORA_VM_MEMORY_KB,
    OctaviaLimitWarning,
    amphora_limits,
)
from harness.model.loadbalancer import Listener, ListenerProtocol, LoadBalancer, Member, Pool


def test_two_configs_are_aligned_line_by_line_and_differences_marked():
    rows = side_by_side("harness", "global\n    maxconn 2000\nfrontend a\n",
                        "octavia", "global\n    maxconn 50000\nfrontend a\n    log-format x\n")
    assert rows[0] == "2 of 4 lines differ"
    assert rows[2] == "| | harness | octavia |"
    assert "| ~ | `    maxconn 2000` | `    maxconn 50000` |" in rows
    assert "| > |  | `    log-format x` |" in rows
    assert "|   | `frontend a` | `frontend a` |" in rows
    assert side_by_side("a", "x | y\n", "b", "x | y\n")[0] == "identical"
    assert "`x \\| y`" in side_by_side("a", "x | y\n", "b", "x | y\n")[-1]


def test_both_drivers_renderings_are_recorded_after_each_push_and_written_per_test(
        agent_factory, octavia_driver, http_backend, vip_address, tmp_path):
    agent = agent_factory(topology="SINGLE")
    pool = Pool(members=[Member(address="127.0.0.1", port=http_backend.port)])
    lb = LoadBalancer(vip_address=vip_address, listeners=[Listener(
        protocol=ListenerProtocol.HTTP, port=8080, pools=[pool], default_pool_id=pool.id)])
    log = ConfigDiffLog(current="tests/x.py::test_y[1]")
    driver = RecordingDriver(
        LoadBalancerController(lb, [agent.client], paths=agent.amphora_paths()),
        lambda lb, clients: octavia_driver(lb, [agent]), log)
    driver.create()
    pool.members[0].weight = 7
    driver.update()
    driver.delete()

    written = log.write("tests/x.py::test_y[1]", tmp_path)
    assert written == tmp_path / "tests_x.py_test_y_1.md"
    text = written.read_text()
    assert text.count("## push ") == 2 and "(create)" in text and "(update)" in text
    assert "| | harness | octavia |" in text
    # Ours marks its answers; Octavia's logs in its own format: both show, side by side.
    assert "X-Amphora-Id" in text and "log-format" in text
    assert "weight 7" in text
    assert log.write("tests/x.py::test_y[1]", tmp_path) is None  # written once


def test_a_host_that_fits_gets_octavias_values_without_a_word():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        limits = amphora_limits(1_000_000, {"memory": {"free": 500_000, "buffers": 10,
                                                       "cached": 100_000}})
    assert limits.default_connection_limit is None and limits.memory_kb is None


def test_where_the_lab_lowers_octavias_values_it_says_so_naming_the_limit():
    with pytest.warns(OctaviaLimitWarning) as announced:
        limits = amphora_limits(20000, {"memory": {"free": 20_000_000, "buffers": 1,
                                                   "cached": 1}})
    assert limits.default_connection_limit == 2222
    assert limits.memory_kb == AMPHORA_VM_MEMORY_KB
    messages = [str(w.message) for w in announced]
    assert any("at most 20000 files" in m and "maxconn 2222" in m for m in messages)
    assert any("20000002 kB" in m for m in messages)
