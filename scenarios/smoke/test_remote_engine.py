"""The stand-in remote engine (harness.lab.engine_netns): a second dockerd in a network namespace
of its own answers on its socket, and a container on one of its bridge networks is reachable
through the engine's API (exec) and not from the host's namespace.

"Not reachable" is judged by what answers, not by whether a connect fails: a host may have a
default route into a network that accepts any TCP connection (a transparent proxy does), so the
test asks the member for its id and checks that the host never hears it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import closing

import docker
import psutil
import pytest

from harness.lab.constants import MEMBER_PORTS
from harness.lab.engine_netns import EngineError, NetnsEngine
from harness.lab.image_copy import copy_image
from harness.lab.images import ImageBuilder, ImageBuildError

HOST_TRY_S = 2.0
READY_WITHIN_S = 20.0


@pytest.fixture(scope="module")
def engine() -> Iterator[NetnsEngine]:
    engine = NetnsEngine(f"t{os.getpid()}")
    try:
        engine.start(timeout_s=60)
    except EngineError as exc:
        pytest.fail(f"this host cannot start a netns engine: {exc}", pytrace=False)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def remote(engine: NetnsEngine) -> Iterator[docker.DockerClient]:
    with closing(engine.client(timeout_s=300)) as client:
        yield client


@pytest.fixture(scope="module")
def member_image(remote: docker.DockerClient) -> str:
    """The member image, copied from the local engine (built there first if missing)."""
    with closing(docker.from_env()) as local:
        try:
            tag = ImageBuilder(local).ensure("member")
            copy_image(local, remote, tag)
        except ImageBuildError as exc:
            pytest.fail(str(exc), pytrace=False)
    return tag


def _wait_ready(container) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if b'"ready": true' in container.logs():
            return
        container.reload()
        assert container.status in ("created", "running"), container.logs().decode()
        time.sleep(0.2)
    raise AssertionError(f"member not ready in {READY_WITHIN_S}s: {container.logs().decode()}")


def _host_hears(address: str, port: int) -> bytes:
    """What the host's namespace receives from address:port within HOST_TRY_S."""
    try:
        with socket.create_connection((address, port), timeout=HOST_TRY_S) as connection:
            connection.settimeout(HOST_TRY_S)
            return connection.recv(4096)
    except OSError:
        return b""


def test_the_engine_answers_on_its_own_socket(engine: NetnsEngine,
                                               remote: docker.DockerClient) -> None:
    assert remote.ping()
    assert remote.info()["DockerRootDir"] == str(engine.paths.data_root)


def test_its_containers_are_reached_through_the_api_only(
        remote: docker.DockerClient, member_image: str) -> None:
    member_id = f"remote-{uuid.uuid4().hex[:8]}"
    network = remote.networks.create("amphora-harness-remote-test", driver="bridge")
    container = remote.containers.run(member_image, ["--id", member_id], detach=True,
                                      network=network.name)
    _wait_ready(container)
    container.reload()
    settings = container.attrs["NetworkSettings"]["Networks"][network.name]
    address = settings["IPAddress"]
    subnet = ipaddress.ip_network(f"{address}/{settings['IPPrefixLen']}", strict=False)

    port = MEMBER_PORTS["tcp"]
    code, output = container.exec_run(
        ["python3", "-c", "import socket, sys; "
         f"sys.stdout.write(socket.create_connection(('{address}', {port}), 5).recv(4096)"
         ".decode())"])
    assert code == 0 and member_id in output.decode(), output.decode()

    host_addresses = [ipaddress.ip_address(a.address.split("%")[0])
                      for addresses in psutil.net_if_addrs().values() for a in addresses
                      if a.family == socket.AF_INET]
    assert not [a for a in host_addresses if a in subnet], \
        f"the host has an address in the engine's network {subnet}"
    started = time.monotonic()
    heard = _host_hears(address, port)
    assert member_id.encode() not in heard, f"the host reached {address}:{port}: {heard!r}"
    assert time.monotonic() - started <= 2 * HOST_TRY_S + 0.5
