"""The process that runs OpenStack Octavia's amphora driver (harness/drivers/octavia_probe.py)
under the Python of an Octavia virtualenv (harness.drivers.octavia_venv), and the JSON lines we
exchange with it. Octavia's dependencies stay in their own virtualenv, away from the project's.

Importing Octavia's driver takes seconds of CPU, so one process serves many load balancers: each
is sent as a model under its own id, and calls name the load balancer and the amphora.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

PROBE = Path(__file__).with_name("octavia_probe.py")
EXIT_TIMEOUT_S = 30.0
LOG_TAIL_CHARS = 3000


class OctaviaDriverError(RuntimeError):
    """A driver method failed (the message is Octavia's exception), or the probe died."""


@dataclass(frozen=True)
class ProbeSettings:
    """How persistently Octavia's driver tries an amphora ([haproxy_amphora] options). How it
    reaches each amphora (address, port, certificates, paths) travels with the model."""

    connection_max_retries: int = 10
    connection_retry_interval: int = 1
    request_conn_timeout: int = 5
    request_read_timeout: int = 60

    def options(self) -> dict[str, dict[str, object]]:
        return {"haproxy_amphora": {
            "connection_max_retries": self.connection_max_retries,
            "connection_retry_interval": self.connection_retry_interval,
            "rest_request_conn_timeout": self.request_conn_timeout,
            "rest_request_read_timeout": self.request_read_timeout}}


class OctaviaProbe:
    """The probe process. context, when given, is called on a failure and what it returns is
    added to the error (e.g. the end of an agent's log); the probe's own log (Octavia's
    warnings and tracebacks) is added too."""

    def __init__(self, python: Path, settings: ProbeSettings = ProbeSettings(),
                 context: Callable[[], str] | None = None) -> None:
        if not python.exists():
            raise OctaviaDriverError(f"{python} does not exist: no Octavia installed there")
        self.python = python
        self.context = context
        self._lock = threading.Lock()
        # Append mode: the probe shares this file's offset, and our reads must not move where
        # it writes. Closed by close().
        self._log = tempfile.TemporaryFile(mode="a+", prefix="octavia-probe-")  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(python), str(PROBE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True)
        try:
            self.configure(settings)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> OctaviaProbe:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def configure(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self._checked("configure", {"op": "configure", "settings": settings.options()})

    def model(self, spec: dict) -> None:
        """Send (or replace) a load balancer (see octavia_probe.Model for the fields)."""
        self._checked("model", {"op": "model", "lb": spec})

    def forget(self, lb_id: str) -> None:
        self._checked("forget", {"op": "forget", "lb_id": lb_id})

    def call(self, lb_id: str, method: str, amphora: str | None = None, **args) -> object:
        """A driver method (or flow step) on load balancer lb_id, acting on one amphora."""
        return self._checked(method, {"op": "call", "lb_id": lb_id, "method": method,
                                      "amphora": amphora, "args": args})

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout:
            self._process.stdout.close()
        self._log.close()

    def log_tail(self, since: int = 0) -> str:
        """The end of what the probe logged (Octavia's warnings and tracebacks) from offset
        since on."""
        self._log.seek(since)
        return self._log.read()[-LOG_TAIL_CHARS:]

    def _checked(self, what: str, request: dict) -> object:
        with self._lock:
            logged_before = os.fstat(self._log.fileno()).st_size
            answer = self._send(request)
        if not answer["ok"]:
            tail = self.log_tail(logged_before)
            extra = [f"the driver logged:\n{tail}"] if tail else []
            if self.context:
                extra.append(self.context())
            raise OctaviaDriverError("\n".join(
                [f"Octavia's driver: {what} failed: {answer['error']}", *extra]))
        return answer["result"]

    def _send(self, request: dict) -> dict:
        if not (self._process.stdin and self._process.stdout):
            raise OctaviaDriverError("the driver probe has no pipes")
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError as exc:
            raise self._died() from exc
        line = self._process.stdout.readline()
        if not line:
            raise self._died()
        return json.loads(line)

    def _died(self) -> OctaviaDriverError:
        return OctaviaDriverError(f"the driver probe exited with {self._process.poll()}; its "
                                  f"log ends:\n{self.log_tail()}")
