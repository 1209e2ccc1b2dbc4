"""Markers that tie a test to one choice of an axis (--agent, --driver): which one, and why.

`@pytest.mark.agent_xfail("octavia", reason="...")` and its kin take the choice first and a
reason that names the behaviour; both are required, so no test is marked without saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest


def marker_choice(item: pytest.Item, marker: pytest.Mark,
                  choices: Sequence[str], axis: str) -> tuple[str, str]:
    """(choice, reason) of a marker on item; a usage error when either is missing or unknown."""
    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    reason = marker.kwargs.get("reason") or (marker.args[1] if len(marker.args) > 1 else "")
    if name not in choices or not reason:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{marker.name} needs {axis} "
                                f"({' or '.join(choices)}) and a reason")
    return name, reason


def xfail_under(item: pytest.Item, marker_name: str, choices: Sequence[str], chosen: str,
                axis: str) -> None:
    """A test marked to fail under the chosen value is a strict xfail: it must fail there, so
    a fixed bug shows as an unexpected pass."""
    for marker in item.iter_markers(marker_name):
        name, reason = marker_choice(item, marker, choices, axis)
        if name == chosen:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
