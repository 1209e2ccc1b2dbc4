"""The installed amphora-harness distribution: its version, and whether the harness extra is there.

`pip install amphora-harness` installs the agent and what it needs (flask, psutil, cryptography);
the harness's own dependencies (docker, pytest plugins, matplotlib, rich, ...) are the `harness`
extra: `pip install 'amphora-harness[harness]'`. The command and the pytest plugin ask here
before they import any of those, so an agent-only install says what is missing instead of
failing on an import.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires, version

DISTRIBUTION = "amphora-harness"
HARNESS_EXTRA = "harness"
INSTALL_HINT = f"pip install '{DISTRIBUTION}[{HARNESS_EXTRA}]'"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def package_version() -> str:
    """The installed version (a checkout that was never installed: 0+unknown)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def extra_requirements(requirements: list[str], extra: str) -> list[str]:
    """The distribution names that requirement strings (as importlib.metadata gives them) list
    for one extra."""
    names = []
    for requirement in requirements:
        _, _, marker = requirement.partition(";")
        wanted = _EXTRA_MARKER.search(marker)
        if wanted and wanted.group(1) == extra:
            names.append(_NAME.match(requirement.strip()).group(0))
    return names


def missing_harness_requirements() -> list[str]:
    """The harness extra's distributions that are not installed (none from a checkout that was
    never installed: there is no metadata to go by, and the checkout's environment decides)."""
    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return []
    missing = []
    for name in extra_requirements(declared, HARNESS_EXTRA):
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(name)
    return missing
