"""A virtualenv per Octavia source (harness.octavia_source), where the driver probe runs.

The pinned PyPI version lives in `.venv-octavia` (scripts/bootstrap makes it by running this
module); any other source in `.venv-octavia-<install id>`; both under harness.paths.cache_dir()
(the checkout, or the user's cache when the harness was installed from a wheel). A checkout is
installed editable, so edits to its templates and code take effect on the next run without
reinstalling. A venv is
complete once its marker file is written; an incomplete one (an install that failed or was
interrupted) is made again. Creation holds a lock, so parallel sessions wait for each other.

    python3 -m harness.drivers.octavia_venv [SOURCE]    make the venv, print its python
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

from harness.octavia_source import OctaviaSource, OctaviaSourceError, parse_octavia_source
from harness.paths import cache_dir

MARKER = "amphora-harness-octavia.txt"
# The driver's keepalived templater imports pyroute2, which Octavia leaves to the amphora image.
EXTRA_REQUIREMENTS = ("pyroute2==0.9.7",)
INSTALL_TIMEOUT_S = 1800.0


class OctaviaVenvError(RuntimeError):
    """The virtualenv could not be made; the message carries pip's complaint."""


def venv_dir(source: OctaviaSource, root: Path | None = None) -> Path:
    root = root or cache_dir()
    if source.is_default:
        return root / ".venv-octavia"
    return root / f".venv-octavia-{source.install_id()}"


def octavia_python(source: OctaviaSource, root: Path | None = None) -> Path | None:
    """The venv's python if the venv is complete, else None."""
    directory = venv_dir(source, root)
    marker = directory / MARKER
    if marker.is_file() and marker.read_text().strip() == source.label():
        return directory / "bin" / "python"
    # A venv bootstrap made before it wrote markers: the pinned version, verified.
    if source.is_default and _installed_version(directory) == source.location:
        return directory / "bin" / "python"
    return None


def ensure_octavia_python(source: OctaviaSource, root: Path | None = None,
                          log=lambda line: print(line, file=sys.stderr)) -> Path:
    """The venv's python, making the venv first if needed (minutes: Octavia's dependencies)."""
    directory = venv_dir(source, root)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be making it right now
        python = octavia_python(source, root)
        if python is not None:
            return python
        log(f"amphora-harness: installing {source.label()} into {directory}")
        shutil.rmtree(directory, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(directory)])
        python = directory / "bin" / "python"
        _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *source.pip_args(), *EXTRA_REQUIREMENTS])
        (directory / MARKER).write_text(source.label() + "\n")
        return python


def _installed_version(directory: Path) -> str | None:
    python = directory / "bin" / "python"
    if not python.exists():
        return None
    shown = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('octavia'))"],
        capture_output=True, text=True, check=False)
    return shown.stdout.strip() if shown.returncode == 0 else None


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise OctaviaVenvError(f"{' '.join(command)} took over {INSTALL_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        raise OctaviaVenvError(f"{' '.join(command)} failed ({done.returncode}):\n"
                               f"{(done.stdout + done.stderr)[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        source = parse_octavia_source(args[0] if args else None)
        print(ensure_octavia_python(source))
    except (OctaviaSourceError, OctaviaVenvError) as exc:
        print(f"amphora-harness: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
