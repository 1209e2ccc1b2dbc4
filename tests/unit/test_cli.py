"""The amphora-harness command without an engine: argument handling (--provider anywhere and from
the environment, --version), one-line errors, the suite results table from JUnit reports, and
traffic summaries."""

from __future__ import annotations

import argparse
import socket
import threading
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console

from harness.cli import console
from harness.cli import lab as lab_commands
from harness.cli.arguments import PROVIDER_ENV
from harness.cli.main import build_parser, error_line, main, parse_args
from harness.cli.push import summarize_timeline, tcp_answers
from harness.cli.suites import failure_lines, parse_junit, suites_table
from harness.lab.standing_state import STATE_DIR_ENV
from harness.observe.traffic import Sample

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5" failures="1" errors="1" skipped="1">
  <testcase classname="scenarios.smoke.test_smoke" name="test_ok" time="1.0"/>
  <testcase classname="scenarios.smoke.test_smoke" name="test_ok_too" time="1.0"/>
  <testcase classname="scenarios.smoke.test_smoke" name="test_broken" time="1.0">
    <failure message="assert 1 == 2">...</failure></testcase>
  <testcase classname="scenarios.smoke.test_smoke" name="test_setup" time="0.1">
    <error message="fixture failed">...</error></testcase>
  <testcase classname="scenarios.smoke.test_smoke" name="test_later" time="0.0">
    <skipped message="not here"/></testcase>
</testsuite></testsuites>
"""


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state directory: no lab is up as far as these tests know."""
    directory = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_ENV, str(directory))
    monkeypatch.delenv(PROVIDER_ENV, raising=False)
    monkeypatch.setattr(console, "RESULTS_DIR", tmp_path / "results")
    return directory


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_pytest_arguments_after_the_double_dash_go_to_run() -> None:
    args = parse_args(["run", "smoke", "failover", "--", "-k", "kill", "-x"])
    assert args.suites == ["smoke", "failover"]
    assert args.pytest_args == ["-k", "kill", "-x"]
    assert parse_args(["run"]).pytest_args == []
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["status", "--", "-x"])
    assert exit_info.value.code == 2


def test_commands_and_their_options_parse() -> None:
    up = parse_args(["up", "active-standby", "--members", "2", "--no-lb"])
    assert (up.topology, up.members, up.no_lb, up.lb) == ("active-standby", 2, True, None)
    assert parse_args(["up", "--active-standby"]).arrangement == "ACTIVE_STANDBY"
    fault = parse_args(["fault", "loss", "1", "--percent", "5", "--lab", "abc"])
    assert (fault.kind, fault.targets, fault.percent, fault.lab) == ("loss", ["1"], 5, "abc")
    assert parse_args(["bench", "--quick"]).threshold == 0.25
    with pytest.raises(SystemExit):
        parse_args(["fault", "explode", "0"])
    with pytest.raises(SystemExit):
        parse_args(["up", "--members", "-1"])


# The shortest valid command line of every command (its required arguments only).
EVERY_COMMAND = {
    "images": ["images", "build"], "up": ["up"], "status": ["status"], "shell": ["shell", "0"],
    "logs": ["logs", "0"], "down": ["down"], "gc": ["gc"], "push": ["push", "http"],
    "traffic": ["traffic"], "fault": ["fault", "kill"], "heal": ["heal"], "run": ["run"],
    "merge": ["merge", "results/run/x"], "bench": ["bench"], "conformance": ["conformance"],
    "engine": ["engine", "down", "r1"],
}


def test_every_command_is_listed_here() -> None:
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    assert set(commands.choices) == set(EVERY_COMMAND)


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND))
def test_provider_goes_before_or_after_any_command(command: str) -> None:
    argv = EVERY_COMMAND[command]
    assert parse_args(argv).provider == "docker"
    assert parse_args(["--provider", "netns", *argv]).provider == "netns"
    assert parse_args([*argv, "--provider", "netns"]).provider == "netns"
    # Given twice, the later counts (as for any option given twice).
    assert parse_args(["--provider", "docker", *argv, "--provider", "netns"]).provider == "netns"
    assert parse_args(["--provider", "netns", *argv, "--provider", "docker"]).provider == "docker"


def test_provider_inside_the_images_group() -> None:
    assert parse_args(["images", "--provider", "netns", "build"]).provider == "netns"
    assert parse_args(["images", "build", "amphora", "--provider", "netns"]).provider == "netns"


def test_provider_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROVIDER_ENV, "netns")
    assert parse_args(["status"]).provider == "netns"
    assert parse_args(["status", "--provider", "docker"]).provider == "docker"
    assert parse_args(["--provider", "docker", "status"]).provider == "docker"


def test_an_unknown_provider_in_the_environment_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv(PROVIDER_ENV, "qemu")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["status"])
    assert exit_info.value.code == 2
    assert f"{PROVIDER_ENV}='qemu' names no provider" in capsys.readouterr().err
    # Given on the command line, the variable is not consulted.
    assert parse_args(["status", "--provider", "docker"]).provider == "docker"


def test_an_unknown_provider_option_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["status", "--provider", "qemu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'qemu'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["gc", "--images", "--provider", "netns"],
    ["--provider", "netns", "gc", "--images"],
])
def test_the_command_runs_on_the_provider_given_after_it(argv, capsys) -> None:
    # gc --images refuses any provider but docker, whether netns can run here (root) or not:
    # both messages name the provider the command was given.
    assert main(argv) == 1
    assert "the netns provider" in one_error_line(capsys)


def test_the_command_runs_on_the_provider_of_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setenv(PROVIDER_ENV, "netns")
    assert main(["gc", "--images"]) == 1
    assert "the netns provider" in one_error_line(capsys)


def test_version_prints_the_installed_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"amphora-harness {version('amphora-harness')}\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["status"], "no lab is up"),
    (["traffic"], "no lab is up"),
    (["heal"], "no lab is up"),
    (["down"], "no lab is up"),
    (["logs", "0", "--lab", "feedbeef"], "no lab feedbeef"),
    (["up", "no-such-topology"], "no topology 'no-such-topology'"),
    (["up", "--lb", "no-such-lb"], "no load balancer named 'no-such-lb'"),
    (["up", "--members", "1"], "'m2' is neither an IP address nor a known name"),
    (["up", "--single", "--amphorae", "0"], "amphorae must be 1..8"),
    (["run", "no_such_suite"], "no suite no_such_suite"),
    (["images", "build", "nothing"], "no such image: nothing"),
])
def test_errors_are_one_line_and_exit_1(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert line.startswith("amphora-harness: ")
    assert message in line


def test_an_unexpected_error_names_its_type_on_one_line(monkeypatch, capsys) -> None:
    def broken(_args) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(lab_commands, "status", broken)
    assert main(["status"]) == 1
    assert one_error_line(capsys) == "amphora-harness: ZeroDivisionError: division by zero"


def test_a_long_message_keeps_its_first_line_and_saves_the_rest(tmp_path: Path) -> None:
    line = error_line(RuntimeError("amphora-0 stopped while booting; its log:\nline 1\nline 2"))
    assert line.startswith("amphora-0 stopped while booting; its log: (more in ")
    saved = Path(line.split("(more in ")[1].rstrip(")"))
    assert saved.read_text() == "amphora-0 stopped while booting; its log:\nline 1\nline 2\n"
    assert error_line(ValueError("")) == "ValueError"


def test_junit_totals_and_failing_tests(tmp_path: Path) -> None:
    report = tmp_path / "smoke.xml"
    report.write_text(JUNIT)
    result = parse_junit(report, "smoke", exit_code=1, duration_s=12.0)
    assert (result.tests, result.passed, result.failed, result.skipped) == (5, 2, 2, 1)
    assert result.failures == ("scenarios.smoke.test_smoke::test_broken",
                               "scenarios.smoke.test_smoke::test_setup")
    assert not result.ok
    missing = parse_junit(tmp_path / "absent.xml", "stats", exit_code=4, duration_s=1.0)
    assert not missing.ok and missing.failures == ("no JUnit report",)


def test_a_suite_that_collects_nothing_is_not_a_failure(tmp_path: Path) -> None:
    report = tmp_path / "empty.xml"
    report.write_text('<testsuites><testsuite name="pytest" tests="0"/></testsuites>')
    assert parse_junit(report, "stats", exit_code=5, duration_s=0.5).ok


def test_the_suites_table_lists_every_suite_and_the_failures_follow(tmp_path: Path) -> None:
    report = tmp_path / "smoke.xml"
    report.write_text(JUNIT)
    results = [parse_junit(report, "smoke", 1, 12.0),
               parse_junit(report, "failover", 0, 3.0)]
    console = Console(record=True, width=160)
    console.print(suites_table(results))
    text = console.export_text()
    assert "smoke" in text and "failover" in text and "12s" in text
    assert failure_lines(results)[0] == \
        "failed in smoke: scenarios.smoke.test_smoke::test_broken"
    assert len(failure_lines(results)) == 4


def test_traffic_summary_counts_outcomes_members_and_latency() -> None:
    samples = [Sample(sent_at=n * 0.1, ok=True, latency_ms=float(n + 1), status=200,
                      member=f"m{n % 2}", amphora="a") for n in range(10)]
    samples.append(Sample(sent_at=1.0, ok=False, latency_ms=1000.0, error="ConnectTimeout"))
    summary = summarize_timeline(samples)
    assert (summary.requests, summary.ok, summary.failed) == (11, 10, 1)
    assert summary.statuses == {200: 10, "ConnectTimeout": 1}
    assert summary.members == {"m0": 5, "m1": 5}
    assert summary.latency_ms["p50"] == 5.5 and summary.latency_ms["max"] == 10.0


def test_a_tcp_listener_serves_when_a_line_comes_back() -> None:
    """What `push` waits for on a TCP listener (it has no header naming the amphora)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(5)

        def answer(lines: list[bytes]) -> None:
            for line in lines:
                connection, _ = server.accept()
                with connection:
                    connection.sendall(line)

        serving = threading.Thread(target=answer, args=([b'{"member": "m1"}\n', b""],))
        serving.start()
        assert tcp_answers("127.0.0.1", port)
        # Accepted and closed without a word: a frontend with no member behind it.
        assert not tcp_answers("127.0.0.1", port)
        serving.join(timeout=5)
    assert not tcp_answers("127.0.0.1", port, timeout=0.5)  # nothing listens any more
