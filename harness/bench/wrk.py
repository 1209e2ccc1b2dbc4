"""wrk, the load tool: running it on the host and reading its report.

wrk runs with a Lua script whose `done` hook prints one line of JSON (counts, errors, latency
percentiles in µs) after WRK_REPORT_MARK, so nothing is parsed out of wrk's human-readable
summary. How busy wrk itself was is measured around it (its CPU seconds per second of run), to
show it was not the bottleneck.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no report."""


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
    raise WrkError(f"wrk printed no report: {output.strip()[-300:]}")


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
            raise WrkError("wrk is not installed (apt-get install wrk)")
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
            raise WrkError(f"wrk {url}: {result.stderr.strip() or result.stdout.strip()}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return load_run_from_report(target, parse_wrk_report(result.stdout), cpu / wall)
