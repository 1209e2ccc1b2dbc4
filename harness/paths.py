"""Where the harness finds what it ships and where it writes.

What it ships — the image definitions, the fixtures and the scenario suites — is package data
under `harness/data/`, found through importlib.resources: in a wheel those are real directories
inside the installed package; in a checkout `harness/data/{images,fixtures,scenarios}` are
symbolic links to the top-level folders, so both read the same files. The package is installed
unzipped (the suites run from there and the netns provider executes amphora-init in place).

What it writes never goes into the package: results go under the current directory
(`./results`, or wherever --results-dir points), the state of standing labs under the user's
state directory (harness.lab.standing_state), and what it builds for reuse (Octavia's driver
virtualenvs) under CACHE_DIR.
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

DATA_DIR = Path(str(files("harness") / "data"))
# Resolved: from a checkout, the real folders (what `pytest scenarios` there collects too).
IMAGES_DIR = (DATA_DIR / "images").resolve()
FIXTURES_DIR = (DATA_DIR / "fixtures").resolve()
SCENARIOS_DIR = (DATA_DIR / "scenarios").resolve()

# The directory that holds the agent's package (the checkout, or site-packages): images copy the
# agent from there, and the netns provider puts it on its nodes' PYTHONPATH. Found without
# importing it (the harness does not run the agent's code).
_AGENT_SPEC = find_spec("amphora_agent")
if _AGENT_SPEC is None or _AGENT_SPEC.origin is None:
    raise ImportError("the amphora_agent package is not installed beside the harness")
AGENT_PACKAGE_DIR = Path(_AGENT_SPEC.origin).resolve().parent
AGENT_IMPORT_ROOT = AGENT_PACKAGE_DIR.parent

# The source checkout the harness runs from (an editable install or a plain clone), or None when
# it was installed from a wheel.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]
CHECKOUT_DIR: Path | None = _PACKAGE_PARENT if (_PACKAGE_PARENT / "pyproject.toml").is_file() \
    else None

CACHE_DIR_ENV = "AMPHORA_HARNESS_CACHE_DIR"


def cache_dir() -> Path:
    """Where reusable builds go: $AMPHORA_HARNESS_CACHE_DIR, else the checkout (where
    scripts/bootstrap makes `.venv-octavia`), else $XDG_CACHE_HOME/amphora-harness."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    if CHECKOUT_DIR is not None:
        return CHECKOUT_DIR
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "amphora-harness"


RESULTS_DIR_ENV = "AMPHORA_HARNESS_RESULTS_DIR"


def default_results_dir(base: Path | None = None) -> Path:
    """Where results go when no --results-dir says: $AMPHORA_HARNESS_RESULTS_DIR (`run` sets it
    for its pytest children, so a suite writes where the command was told to), else
    base/results (base: the current directory)."""
    if os.environ.get(RESULTS_DIR_ENV):
        return Path(os.environ[RESULTS_DIR_ENV]).absolute()
    return ((base or Path.cwd()) / "results").absolute()
