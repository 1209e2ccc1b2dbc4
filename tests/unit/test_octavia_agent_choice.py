"""Choosing Octavia's own agent, without an engine: the image tag records the Octavia source and
follows its content, the haproxy file-limit drop-in exists only below Octavia's limit and names
the real one, Octavia's integer options are written as integers, and asking for Octavia's agent
on the netns provider is a usage error in the CLI and the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.lab.agent_config import AgentSettings, render_agent_config
from harness.lab.octavia_agent import (
    HAPROXY_DROPIN_PATH,
    HAPROXY_LIMITS_PATH,
    OCTAVIA_HAPROXY_NOFILE,
    haproxy_limit_files,
)
from harness.lab.octavia_image import resolve, top_tag
from harness.octavia_source import parse_octavia_source
from harness.paths import SCENARIOS_DIR

AGENT_LINE = "        body = {'hostname': socket.gethostname(),\n"


def _checkout(root: Path) -> Path:
    """The smallest tree the image build takes as an Octavia checkout."""
    (root / "octavia/amphorae").mkdir(parents=True)
    (root / "octavia/__init__.py").write_text("")
    (root / "octavia/amphorae/amphora_info.py").write_text(AGENT_LINE)
    (root / "setup.cfg").write_text("[metadata]\nname = octavia\n")
    (root / "PKG-INFO").write_text("Version: 19.0.0\n")
    for element in ("amphora-agent", "haproxy-octavia"):
        (root / "elements" / element).mkdir(parents=True)
        (root / "elements" / element / "README.rst").write_text(element)
    return root


def test_the_tag_records_a_checkout_and_follows_one_changed_line(tmp_path: Path) -> None:
    tree = _checkout(tmp_path / "octavia")
    source = parse_octavia_source(str(tree))
    before, before_id = top_tag(resolve(source)), source.content_id()
    assert before.startswith(f"amphora-harness/octavia-amphora:{before_id}-")
    assert top_tag(resolve(source)) == before  # same content, same tag: nothing to build

    (tree / "octavia/amphorae/amphora_info.py").write_text(
        AGENT_LINE.replace("socket.gethostname()", "'dev-' + socket.gethostname()"))
    assert source.content_id() != before_id
    assert top_tag(resolve(source)) != before


def test_haproxy_limits_are_lowered_only_below_octavias_and_say_so() -> None:
    assert haproxy_limit_files(OCTAVIA_HAPROXY_NOFILE) == {}
    assert haproxy_limit_files(OCTAVIA_HAPROXY_NOFILE * 2) == {}
    files = haproxy_limit_files(20000)
    assert set(files) == {HAPROXY_DROPIN_PATH, HAPROXY_LIMITS_PATH}
    dropin = files[HAPROXY_DROPIN_PATH].decode()
    assert "LimitNOFILE=20000\n" in dropin
    assert "hard open-files limit is 20000" in dropin
    assert f"-f {HAPROXY_LIMITS_PATH}" in dropin
    assert "no strict-limits" in files[HAPROXY_LIMITS_PATH].decode()


def test_heartbeat_interval_is_written_as_octavias_integer() -> None:
    settings = AgentSettings(amphora_id="a", ca_path="/ca", server_pem_path="/pem",
                             heartbeat_interval=10.0)
    assert "heartbeat_interval = 10\n" in render_agent_config(settings)
    settings.heartbeat_interval = 0.5
    assert "heartbeat_interval = 0.5\n" in render_agent_config(settings)


def test_octavias_agent_on_netns_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["up", "--agent", "octavia", "--provider", "netns"])
    assert exit_info.value.code == 2
    assert "--agent octavia runs on the docker provider only" in capsys.readouterr().err

    plugin = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q",
         str(SCENARIOS_DIR / "smoke"), "--agent", "octavia", "--provider", "netns"],
        capture_output=True, text=True, timeout=120, check=False)
    assert plugin.returncode == 4, plugin.stdout + plugin.stderr
    assert "--agent octavia runs on the docker provider only" in plugin.stderr
