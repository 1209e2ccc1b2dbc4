"""What the lab's pytest-testinfra backends share: a host name that names a lab node, and
registration under the backend's scheme (testinfra knows only its own backends; the pytest
plugin registers ours at configure time). Each provider's backend says how a command reaches
its nodes."""

from __future__ import annotations

from typing import Any, ClassVar

import testinfra.backend
from testinfra.backend import base


class NodeBackend(base.BaseBackend):
    """A testinfra backend for `<NAME>://<node>`."""

    NAME: ClassVar[str]

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name = name
        super().__init__(name, *args, **kwargs)

    @classmethod
    def register(cls) -> None:
        """Let testinfra.get_host take `<NAME>://<node>`; registering twice is harmless."""
        testinfra.backend.BACKENDS.setdefault(cls.NAME, f"{cls.__module__}.{cls.__qualname__}")
