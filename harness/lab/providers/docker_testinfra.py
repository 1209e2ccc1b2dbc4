"""A pytest-testinfra backend for docker nodes on any engine: `docker-api://<container id>` runs
commands through the Docker API of the engine the node was booted on. testinfra's own docker
backend shells out to the `docker` command, which knows only the environment's engine; a lab
on another engine (--docker-host) would be out of its reach."""

from __future__ import annotations

import threading
from typing import Any

import docker
from testinfra.backend import base

from harness.lab.providers.testinfra_node import NodeBackend

_engines: dict[str, docker.DockerClient] = {}
_engines_lock = threading.Lock()


def remember_engine(container_id: str, client: docker.DockerClient) -> None:
    """Note which engine holds container_id (the docker provider does, when it names the
    testinfra host of a node)."""
    with _engines_lock:
        _engines[container_id] = client


class DockerApiBackend(NodeBackend):
    """`docker-api://<container id>` (what DockerProvider.testinfra_backend gives)."""

    NAME = "docker-api"

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        with _engines_lock:
            client = _engines.get(self.name)
        if client is None:
            raise RuntimeError(f"no engine known for container {self.name}: ask "
                               "DockerProvider.testinfra_backend for its testinfra host")
        cmd = self.get_command(command, *args)
        started = client.api.exec_create(self.name, ["/bin/sh", "-c", cmd])
        stdout, stderr = client.api.exec_start(started["Id"], demux=True)
        status = client.api.exec_inspect(started["Id"])["ExitCode"]
        return self.result(status, self.encode(cmd), stdout or b"", stderr or b"")

