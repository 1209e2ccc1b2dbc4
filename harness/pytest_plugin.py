"""The amphora-harness pytest plugin: lab options and fixtures (to be completed)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amphora-harness")
    group.addoption("--provider", default="docker", choices=("docker", "netns"),
                    help="where lab amphorae run (default: docker)")
    group.addoption("--keep-lab", action="store_true",
                    help="leave the lab running after the tests, for inspection")
    group.addoption("--agent-image", default=None,
                    help="run scenarios against this amphora image instead of the one we build")
