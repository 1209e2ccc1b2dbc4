"""What the agent answers when a request fails, as the tests check it: the status and Octavia's
message through harness.amphora_api's AmphoraAPIError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from harness.amphora_api.client import AmphoraAPIError


def expect_error(status: int, message: str, call: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> AmphoraAPIError:
    """call(*args, **kwargs) must fail with status and message; returns the error for a look
    at its details."""
    with pytest.raises(AmphoraAPIError) as caught:
        call(*args, **kwargs)
    assert (caught.value.status, caught.value.message) == (status, message), caught.value.details
    return caught.value
