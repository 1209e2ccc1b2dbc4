"""The pytest11 entry point of amphora-harness: loads the plugin (harness.pytest_plugin) when the
harness extra is installed.

pytest loads the entry points of every installed distribution. An environment that installed
only the agent (`pip install amphora-harness`) may well have pytest for other reasons; importing
the plugin there would fail on docker or testinfra and take pytest down with it. There the
plugin stays off and the report header says why.
"""

from __future__ import annotations

import pytest

from harness.distribution import INSTALL_HINT, missing_harness_requirements

_MISSING = missing_harness_requirements()
pytest_plugins = [] if _MISSING else ["harness.pytest_plugin"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not _MISSING:
        return []
    return [f"amphora-harness: lab fixtures off, the harness extra is not installed "
            f"(missing {', '.join(_MISSING)}): {INSTALL_HINT}"]
