"""Shared fixtures of the scenario suites. The lab fixtures themselves (lab, amphora, members,
amphora_client, amphora_host, vip_client, ...) come from harness.pytest_plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session for test traffic into the lab. It ignores proxy settings from the
    environment: traffic to lab addresses must go straight onto the lab's bridges."""
    with requests.Session() as session:
        session.trust_env = False
        yield session
