"""The netns engine's pure parts (where it keeps things, how dockerd is started and configured)
and the image copy between engines, against fake clients. The live engine is tested in
scenarios/smoke/test_remote_engine.py."""

from __future__ import annotations

import io
from ipaddress import IPv4Network

import docker.errors
import pytest

from harness.cli.main import parse_args
from harness.lab.addressing import LAB_ADDRESS_SPACE
from harness.lab.engine_netns import (
    ADDRESS_POOLS,
    BRIDGE_IP,
    EngineError,
    EnginePaths,
    daemon_config,
)
from harness.lab.image_copy import copy_image
from harness.lab.images import ImageBuildError

# The kernel's limit for a unix socket's path (sun_path, with its terminating NUL).
UNIX_PATH_MAX = 107
# Docker's default pools (172.17.0.0/16 - 172.31.0.0/16 and 192.168.0.0/16).
DOCKER_DEFAULT_POOLS = (IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))


def test_everything_is_named_after_the_engine() -> None:
    paths = EnginePaths("remote1")
    assert paths.netns == "ah-engine-remote1"
    assert paths.url == "unix:///run/ah-remote1/docker.sock"
    assert paths.data_root.is_relative_to(paths.data_dir)
    assert paths.log_file.parent == paths.data_dir
    assert paths.exec_root.is_relative_to(paths.run_dir)
    assert paths.pidfile.parent == paths.run_dir
    # Not /docker, where the host engine keeps its containers' cgroups.
    assert daemon_config(paths)["cgroup-parent"] == "/ah-engine-remote1"


@pytest.mark.parametrize("name", ["", "Remote", "a/b", "-x", "x" * 21, "a b", "../x"])
def test_a_name_that_would_make_bad_paths_is_refused(name: str) -> None:
    with pytest.raises(EngineError, match="engine name"):
        EnginePaths(name)


def test_the_longest_name_keeps_containerd_sockets_under_the_unix_path_limit() -> None:
    paths = EnginePaths("x" * 20)
    # containerd's socket is the deepest one dockerd makes under the exec root.
    deepest = paths.exec_root / "containerd" / "containerd.sock.ttrpc"
    assert len(str(deepest)) < UNIX_PATH_MAX
    assert len(str(paths.socket)) < UNIX_PATH_MAX


def test_dockerd_enters_only_the_network_namespace() -> None:
    """`ip netns exec` would remount /sys and hide the cgroup mounts dockerd needs."""
    paths = EnginePaths("r1")
    argv = paths.dockerd_argv()
    assert argv[:3] == ["nsenter", f"--net=/run/netns/{paths.netns}", "dockerd"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options["--host"] == paths.url
    assert options["--data-root"] == str(paths.data_root)
    assert options["--exec-root"] == str(paths.exec_root)
    assert options["--config-file"] == str(paths.config_file)
    assert options["--containerd-namespace"] != "moby"  # the host engine's


def test_its_networks_stay_clear_of_the_labs_and_the_host_engine() -> None:
    config = daemon_config(EnginePaths("r1"))
    assert config["storage-driver"] == "fuse-overlayfs"
    assert config["bip"] == str(BRIDGE_IP)
    pools = [IPv4Network(pool["base"]) for pool in config["default-address-pools"]]
    assert pools == list(ADDRESS_POOLS)
    for network in [*pools, BRIDGE_IP.network]:
        assert not network.overlaps(LAB_ADDRESS_SPACE)
        assert not any(network.overlaps(default) for default in DOCKER_DEFAULT_POOLS)
    assert not any(BRIDGE_IP.network.overlaps(pool) for pool in pools)


def test_engine_commands_parse() -> None:
    up = parse_args(["engine", "up", "r1", "--copy-images", "--copy-image", "a:1"])
    assert (up.name, up.copy_images, up.copy_image) == ("r1", True, ["a:1"])
    assert parse_args(["engine", "down", "r1"]).name == "r1"


class FakeImages:
    def __init__(self, tags: dict[str, int]) -> None:
        self.tags = tags

    def get(self, tag: str) -> FakeImage:
        if tag not in self.tags:
            raise docker.errors.ImageNotFound(tag)
        return FakeImage(self.tags[tag])


class FakeImage:
    def __init__(self, size: int) -> None:
        self.attrs = {"Size": size}


class FakeApi:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get_image(self, tag: str, chunk_size: int) -> io.BytesIO:
        return io.BytesIO(tag.encode() * 3)

    def load_image(self, data, quiet: bool) -> list[dict]:
        received = b"".join(data)
        if self.engine.refuse:
            return [{"error": "no space left on device"}]
        tag = received[: len(received) // 3].decode()
        self.engine.images.tags[tag] = len(received)
        return [{"stream": f"Loaded image: {tag}"}]


class FakeEngine:
    def __init__(self, tags: dict[str, int], refuse: bool = False) -> None:
        self.images = FakeImages(tags)
        self.api = FakeApi(self)
        self.refuse = refuse


def test_an_image_is_copied_by_its_tag_and_only_once() -> None:
    source, target = FakeEngine({"ah/member:1": 100}), FakeEngine({})
    lines: list[str] = []
    assert copy_image(source, target, "ah/member:1", lines.append)
    assert "ah/member:1" in target.images.tags
    assert not copy_image(source, target, "ah/member:1", lines.append)
    assert lines[-1] == "ah/member:1: already there"


def test_a_copy_that_fails_says_why() -> None:
    with pytest.raises(ImageBuildError, match="not on the source engine"):
        copy_image(FakeEngine({}), FakeEngine({}), "ah/member:1")
    with pytest.raises(ImageBuildError, match="no space left"):
        copy_image(FakeEngine({"ah/member:1": 1}), FakeEngine({}, refuse=True), "ah/member:1")
