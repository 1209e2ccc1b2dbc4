"""A pytest-testinfra backend for netns nodes: `netns://<node name>` runs commands inside the
node (its mount, pid, network, UTS and IPC namespaces), as testinfra's docker backend does with
`docker exec`. testinfra knows only its own backends: register_backend() adds this one (the
pytest plugin does, at configure time)."""

from __future__ import annotations

from typing import Any

import testinfra.backend
from testinfra.backend import base

from harness.lab.providers.netns import find_node, running_init
from harness.lab.providers.netns_state import StateStore


class NetnsBackend(base.BaseBackend):
    NAME = "netns"

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name = name
        super().__init__(name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        store = StateStore()
        lab_id, _ = find_node(store, self.name)
        init = running_init(store, lab_id, self.name)
        if init is None:
            raise RuntimeError(f"netns node {self.name} is not running")
        cmd = self.get_command(command, *args)
        out = self.run_local("nsenter -t %s -m -u -i -n -p -- /bin/sh -c %s", str(init.pid), cmd)
        out.command = self.encode(cmd)
        return out


def register_backend() -> None:
    """Let testinfra.get_host take `netns://<node name>` (what NetnsProvider.testinfra_backend
    gives); registering twice is harmless."""
    testinfra.backend.BACKENDS.setdefault(NetnsBackend.NAME, f"{__name__}.NetnsBackend")
