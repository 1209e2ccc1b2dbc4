"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.support.lb_fixtures import fixture_certificates


@pytest.fixture(scope="session")
def pems() -> dict[str, bytes]:
    """Certificates for the load-balancer fixture files (tests/support/lb_fixtures.py)."""
    return fixture_certificates()
