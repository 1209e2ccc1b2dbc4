"""A lab's host side on a Docker Engine whose network namespace this host cannot enter (another
machine, or a namespace of its own): its fault node, a container of the lab on that engine's
host network, in which the lab's host-side commands (nft, ip link) run through the engine's API.

The node runs the amphora image (it has nft and ip) with NET_ADMIN and does nothing but sleep
until a command comes. It is booted on the first command and carries the labels of the lab's
networks (lab, owner, kept or not), so the engine's teardown and gc remove it with the lab;
DockerProvider.teardown removes the lab's tables through it first.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import docker
import docker.errors

from harness.lab.providers.base import ROLE_LABEL

ROLE = "faults"
CAPABILITIES = ["NET_ADMIN"]
# tini reaps what exec leaves and makes the node stop at once; sleep waits for commands.
ENTRYPOINT = ["/usr/bin/tini", "--", "sleep", "infinity"]


def fault_node_name(lab_id: str) -> str:
    return f"amphora-harness-{lab_id}-{ROLE}"


class FaultNode:
    """A HostShell (harness.lab.host_shell) in the engine's host network namespace."""

    def __init__(self, client: docker.DockerClient, lab_id: str, labels: dict[str, str],
                 image: Callable[[], str]) -> None:
        """labels: the lab's, as its networks carry them; image: the amphora image's reference
        on that engine (asked for only when the node is booted)."""
        self._client = client
        self.name = fault_node_name(lab_id)
        self._labels = {**labels, ROLE_LABEL: ROLE}
        self._image = image

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self._exec(argv)
        except docker.errors.NotFound:
            self._boot()
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it exists but is not running
                raise
            self._client.api.start(self.name)
        return self._exec(argv)

    def exists(self) -> bool:
        try:
            self._client.api.inspect_container(self.name)
        except docker.errors.NotFound:
            return False
        return True

    def _exec(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        started = self._client.api.exec_create(self.name, argv)
        stdout, stderr = self._client.api.exec_start(started["Id"], demux=True)
        code = self._client.api.exec_inspect(started["Id"])["ExitCode"]
        return subprocess.CompletedProcess(argv, code, (stdout or b"").decode(errors="replace"),
                                           (stderr or b"").decode(errors="replace"))

    def _boot(self) -> None:
        api = self._client.api
        try:
            api.create_container(
                self._image(), entrypoint=ENTRYPOINT, name=self.name, labels=self._labels,
                detach=True, host_config=api.create_host_config(network_mode="host",
                                                                cap_add=CAPABILITIES))
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another process of the lab booted it first
                raise
        api.start(self.name)
