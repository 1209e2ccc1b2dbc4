"""Runs spread over processes: the locked merge of results files (harness.observe.results_file)
and pytest-xdist workers under the plugin (harness.pytest_distributed), with no engine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from harness.observe.results_file import ResultsFileError, merge_json_entries

WRITERS = 6
ENTRIES_PER_WRITER = 20


def _write_entries(path: Path, writer: int) -> None:
    # One merge per entry: many overlapping read-modify-write cycles between the processes.
    for n in range(ENTRIES_PER_WRITER):
        merge_json_entries(path, {f"w{writer}-{n}": {"writer": writer, "n": n}})


def test_concurrent_merges_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "failover" / "outages.json"
    with ProcessPoolExecutor(WRITERS) as pool:
        list(pool.map(_write_entries, [path] * WRITERS, range(WRITERS)))
    merged = json.loads(path.read_text())
    assert set(merged) == {f"w{w}-{n}" for w in range(WRITERS) for n in range(ENTRIES_PER_WRITER)}
    assert merged["w3-7"] == {"writer": 3, "n": 7}


def test_a_later_entry_replaces_the_same_key_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "outages.json"
    merge_json_entries(path, {"hard_kill": {"downtime": 1.0}, "graceful_stop": {"downtime": 2}})
    merged = merge_json_entries(path, {"hard_kill": {"downtime": 3.0}})
    assert merged == {"hard_kill": {"downtime": 3.0}, "graceful_stop": {"downtime": 2}}
    assert json.loads(path.read_text()) == merged


@pytest.mark.parametrize("content", ["[1, 2]", "{not json"])
def test_a_file_that_is_not_a_json_object_is_an_error_and_stays(tmp_path: Path,
                                                                content: str) -> None:
    path = tmp_path / "outages.json"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match=r"outages\.json"):
        merge_json_entries(path, {"x": 1})
    assert path.read_text() == content


WORKER_TESTS = textwrap.dedent("""
    import pytest
    from harness.pytest_plugin import NOTES

    @pytest.mark.parametrize("n", range(4))
    def test_note(request, docker_host, n):
        worker = getattr(request.config, "workerinput", {}).get("workerid", "none")
        request.config.stash.setdefault(NOTES, []).append(
            f"note {n} from {worker} on engine {docker_host}")
""")


def _run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess:
    (directory / "test_notes.py").write_text(WORKER_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args,
         str(directory / "test_notes.py")],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False)


def test_workers_notes_reach_the_summary_and_workers_take_engines_round_robin(
        tmp_path: Path) -> None:
    run = _run_pytest(tmp_path, "-n", "2", "--docker-host", "unix:///engine-a.sock",
                      "--docker-host", "unix:///engine-b.sock")
    assert run.returncode == 0, run.stdout + run.stderr
    notes = [line for line in run.stdout.splitlines() if line.startswith("note ")]
    assert sorted(line.split()[1] for line in notes) == ["0", "1", "2", "3"]
    engines = {line.split(" from ")[1] for line in notes}
    assert engines <= {"gw0 on engine unix:///engine-a.sock",
                       "gw1 on engine unix:///engine-b.sock"}
    assert len(engines) == 2


def test_without_workers_the_first_engine_is_used(tmp_path: Path) -> None:
    run = _run_pytest(tmp_path, "--docker-host", "unix:///engine-a.sock",
                      "--docker-host", "unix:///engine-b.sock")
    assert run.returncode == 0, run.stdout + run.stderr
    notes = [line for line in run.stdout.splitlines() if line.startswith("note ")]
    assert len(notes) == 4
    assert all(line.endswith("from none on engine unix:///engine-a.sock") for line in notes)
