"""A pytest-testinfra backend for netns nodes: `netns://<node name>` runs commands inside the
node (its mount, pid, network, UTS and IPC namespaces), as testinfra's docker backend does with
`docker exec`."""

from __future__ import annotations

from typing import Any

from testinfra.backend import base

from harness.lab.providers.netns import find_node, running_init
from harness.lab.providers.netns_state import StateStore
from harness.lab.providers.testinfra_node import NodeBackend


class NetnsBackend(NodeBackend):
    """`netns://<node name>` (what NetnsProvider.testinfra_backend gives)."""

    NAME = "netns"

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

