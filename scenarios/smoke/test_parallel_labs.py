"""Two labs side by side: separate address blocks, both reachable from the host."""

from __future__ import annotations

from collections.abc import Callable

import requests

from harness.lab.addressing import NETWORK_ROLES
from harness.lab.lab import Lab


def test_two_labs_run_at_once(lab_factory: Callable[[], Lab]) -> None:
    first, second = lab_factory(), lab_factory()
    assert first.index != second.index
    for role in NETWORK_ROLES:
        assert not first.plan(role).subnet.overlaps(second.plan(role).subnet)

    members = [lab.add_members(1)[0] for lab in (first, second)]
    with requests.Session() as http:
        http.trust_env = False
        for member in members:
            url = f"http://{member.address}:{member.port('http')}/"
            assert http.get(url, timeout=5).json()["member"] == member.id
