"""OpenStack Octavia's own amphora driver, as a tool of the harness.

`OctaviaDriver` runs harness/octavia_probe.py under the Python of `.venv-octavia`, where
scripts/bootstrap installs the `octavia` package from PyPI (pinned), and talks to it one JSON
line at a time. Suites use it to drive an amphora with exactly what Octavia sends: its REST
client and TLS settings, and the haproxy.cfg and keepalived.conf its templates render. Octavia's
dependencies stay in their own virtualenv, away from the project's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.paths import REPO_ROOT

OCTAVIA_PYTHON = REPO_ROOT / ".venv-octavia" / "bin" / "python"
PROBE = Path(__file__).with_name("octavia_probe.py")
EXIT_TIMEOUT_S = 30.0


class OctaviaDriverError(RuntimeError):
    """A driver method failed (the message is Octavia's exception), or the probe died."""


@dataclass(frozen=True)
class DriverSettings:
    """Octavia's [haproxy_amphora] options for one amphora layout. Octavia assumes the same
    port and paths on every amphora; agents sharing one host differ, so a driver is configured
    again before it acts on another of them."""

    client_cert: Path
    server_ca: Path
    bind_port: int = 9443
    base_path: str = "/var/lib/octavia"
    base_cert_dir: str = "/var/lib/octavia/certs"
    connection_max_retries: int = 10
    connection_retry_interval: int = 1

    def options(self) -> dict[str, dict[str, object]]:
        return {
            "haproxy_amphora": {
                "client_cert": str(self.client_cert), "server_ca": str(self.server_ca),
                "bind_port": self.bind_port, "base_path": self.base_path,
                "base_cert_dir": self.base_cert_dir,
                "connection_max_retries": self.connection_max_retries,
                "connection_retry_interval": self.connection_retry_interval,
                "rest_request_conn_timeout": 5, "rest_request_read_timeout": 60},
            # Certificates reach the driver from our model, never from Barbican.
            "certificates": {"cert_manager": "local_cert_manager"},
        }


def available(python: Path = OCTAVIA_PYTHON) -> bool:
    return python.exists()


class OctaviaDriver:
    """The probe process. context, when given, is called on a failure and what it returns is
    added to the error (e.g. the end of the agent's log)."""

    def __init__(self, python: Path = OCTAVIA_PYTHON,
                 context: Callable[[], str] | None = None) -> None:
        if not available(python):
            raise OctaviaDriverError(
                f"{python} does not exist: `bash scripts/bootstrap` installs Octavia there")
        self.context = context
        self._process = subprocess.Popen(
            [str(python), str(PROBE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)

    def __enter__(self) -> OctaviaDriver:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def configure(self, settings: DriverSettings) -> None:
        self._checked("configure", {"op": "configure", "settings": settings.options()})

    def model(self, spec: dict) -> None:
        """The load balancer the driver acts on (see octavia_probe.build_model)."""
        self._checked("model", {"op": "model", "lb": spec})

    def call(self, method: str, **args) -> object:
        """A driver method on the model; args["amphora"] picks the amphora (index)."""
        return self._checked(method, {"op": "call", "method": method, "args": args})

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _checked(self, what: str, request: dict) -> object:
        answer = self._send(request)
        if not answer["ok"]:
            extra = f"\n{self.context()}" if self.context else ""
            raise OctaviaDriverError(f"Octavia's driver: {what} failed: {answer['error']}{extra}")
        return answer["result"]

    def _send(self, request: dict) -> dict:
        if not (self._process.stdin and self._process.stdout):
            raise OctaviaDriverError("the driver probe has no pipes")
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError as exc:
            raise OctaviaDriverError(
                f"the driver probe exited with {self._process.poll()}") from exc
        line = self._process.stdout.readline()
        if not line:
            raise OctaviaDriverError(f"the driver probe exited with {self._process.poll()}")
        return json.loads(line)
