"""Builds the lab's images offline: a Debian root file system from packages, our files on top.

No container registry is reachable, so every image starts as a bookworm root file system made by
mmdebstrap from the host's own apt sources (no mirror address lives in this repository) and
imported into the engine. That base changes only when its package list does. The project's files
(the agent, the member server) are layered on top by a Dockerfile `FROM` the base, built with
the engine's classic builder, which needs no registry when the base exists locally.

Tags are hashes of the inputs: `amphora-harness/<name>-base:<hash of packages and mmdebstrap
options>` and `amphora-harness/<name>:<package version>-<hash of base tag, Dockerfile and payload
files>` (the version of the installed amphora-harness, so a report naming the tag names the
release too). An image whose tag exists is not rebuilt, so an unchanged input set builds
nothing.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from rich.console import Console
from rich.markup import escape

from harness.distribution import package_version
from harness.paths import AGENT_PACKAGE_DIR, IMAGES_DIR

REPOSITORY_PREFIX = "amphora-harness/"
IMAGE_LABEL = "amphora-harness.image"
VERSION_LABEL = "amphora-harness.version"

SUITE = "bookworm"
# "essential" is the smallest variant; apt then adds the --include packages and their
# dependencies. Documentation and translations are dead weight in a test image.
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)
MMDEBSTRAP_TIMEOUT_S = 30 * 60
# Where the host keeps its apt sources, in the order they are looked for; the environment
# variable overrides them (e.g. on a host that is not Debian bookworm).
APT_SOURCES_ENV = "AMPHORA_HARNESS_APT_SOURCES"
HOST_APT_SOURCES = (
    Path("/etc/apt/sources.list.d/debian.sources"),
    Path("/etc/apt/sources.list"),
)
CONTEXT_ROOTFS = "rootfs"
LOCK_PATH = Path(tempfile.gettempdir()) / "amphora-harness-images.lock"


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which step failed and why."""


def _tag_safe(text: str) -> str:
    """A PEP 440 version as a Docker tag may spell it ('+' is not allowed there)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


@dataclass(frozen=True)
class ContextFile:
    """One file of a build context."""

    arcname: str
    data: bytes
    mode: int


@dataclass(frozen=True)
class Recipe:
    """One image: directory holds packages.txt and Dockerfile; payload maps paths in the image
    to source files (a directory is copied whole, minus caches). In the build context they sit
    under rootfs/, which the Dockerfile copies to / in one layer."""

    name: str
    directory: Path
    payload: tuple[tuple[str, Path], ...]

    def packages(self) -> list[str]:
        lines = (self.directory / "packages.txt").read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    @property
    def base_repository(self) -> str:
        return f"{REPOSITORY_PREFIX}{self.name}-base"

    @property
    def repository(self) -> str:
        return f"{REPOSITORY_PREFIX}{self.name}"

    def base_tag(self) -> str:
        inputs = [SUITE, *MMDEBSTRAP_OPTIONS, *sorted(self.packages())]
        return f"{self.base_repository}:{_digest(*(i.encode() for i in inputs))}"

    def context_files(self) -> list[ContextFile]:
        dockerfile = self.directory / "Dockerfile"
        files = [ContextFile("Dockerfile", dockerfile.read_bytes(), 0o644)]
        for image_path, source in self.payload:
            files.extend(_files_under(f"{CONTEXT_ROOTFS}/{image_path}", source))
        return sorted(files, key=lambda f: f.arcname)

    def tag(self) -> str:
        parts = [self.base_tag().encode()]
        for f in self.context_files():
            parts += [f.arcname.encode(), str(f.mode).encode(), f.data]
        return f"{self.repository}:{_tag_safe(package_version())}-{_digest(*parts)}"


def _files_under(arcname: str, source: Path) -> Iterator[ContextFile]:
    if source.is_file():
        yield ContextFile(arcname, source.read_bytes(), 0o755 if os.access(source, os.X_OK)
                          else 0o644)
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield ContextFile(f"{arcname}/{path.relative_to(source).as_posix()}",
                              path.read_bytes(), 0o644)


RECIPES: dict[str, Recipe] = {
    "amphora": Recipe(
        "amphora",
        IMAGES_DIR / "amphora",
        (
            ("opt/amphora-agent/amphora_agent", AGENT_PACKAGE_DIR),
            ("usr/local/bin/amphora-agent", IMAGES_DIR / "amphora" / "amphora-agent"),
            ("usr/local/bin/amphora-init", IMAGES_DIR / "amphora" / "amphora-init"),
            ("usr/local/bin/amphora_syslog.py", IMAGES_DIR / "amphora" / "amphora_syslog.py"),
        ),
    ),
    "member": Recipe(
        "member",
        IMAGES_DIR / "member",
        (("opt/member/member_server.py", Path(__file__).with_name("member_server.py")),),
    ),
}


def context_tar(files: list[ContextFile]) -> bytes:
    """A reproducible tar of the build context (fixed owners and times)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for f in files:
            info = tarfile.TarInfo(f.arcname)
            info.size = len(f.data)
            info.mode = f.mode
            tar.addfile(info, io.BytesIO(f.data))
    return buffer.getvalue()


def host_apt_sources() -> Path:
    """The host's Debian apt sources file, which mmdebstrap copies into the new root."""
    override = os.environ.get(APT_SOURCES_ENV)
    candidates = (Path(override),) if override else HOST_APT_SOURCES
    for path in candidates:
        if path.is_file() and path.read_text().strip():
            return path
    raise ImageBuildError(
        f"no apt sources found (looked at {', '.join(map(str, candidates))}); "
        f"set {APT_SOURCES_ENV} to a sources.list or deb822 .sources file for Debian {SUITE}"
    )


@contextmanager
def _build_lock() -> Iterator[None]:
    """Serialises builds between processes (parallel labs would otherwise build twice)."""
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ImageBuilder:
    """Makes sure the images a lab needs exist, building what is missing with visible progress."""

    def __init__(self, client: docker.DockerClient, console: Console | None = None) -> None:
        self.client = client
        self.console = console or Console(stderr=True)

    def exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    def ensure(self, name: str) -> str:
        """The tag of image `name`, built first if missing."""
        recipe = RECIPES[name]
        tag = recipe.tag()
        if self.exists(tag):
            return tag
        with _build_lock():
            if self.exists(tag):  # another process built it while we waited
                return tag
            base = recipe.base_tag()
            if not self.exists(base):
                self._build_base(recipe, base)
            self._build_top(recipe, base, tag)
        return tag

    def stale_images(self) -> list[str]:
        """Tags of ours that no current recipe produces (old code or package lists). Images of
        other builders (Octavia's agent: one per Octavia source) are left alone."""
        current = {tag for recipe in RECIPES.values() for tag in (recipe.tag(), recipe.base_tag())}
        repositories = {repository for recipe in RECIPES.values()
                        for repository in (recipe.repository, recipe.base_repository)}
        stale = []
        for image in self.client.images.list(filters={"label": IMAGE_LABEL}):
            stale += [t for t in image.tags
                      if t.split(":")[0] in repositories and t not in current]
        return stale

    def remove_unused(self, tag: str) -> bool:
        """Remove an image tag unless a container (even a stopped one) still uses it."""
        try:
            self.client.images.remove(tag)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # in use
                return False
            raise ImageBuildError(f"removing {tag}: {exc.explanation}") from exc
        return True

    def _build_base(self, recipe: Recipe, tag: str) -> None:
        started = time.monotonic()
        sources = host_apt_sources()
        self.console.print(f"building {tag}: Debian {SUITE} from {sources} with mmdebstrap")
        argv = [
            "mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(recipe.packages())}",
            "--format=tar", SUITE,
        ]
        with tempfile.TemporaryDirectory(prefix="amphora-harness-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            with self.console.status(f"[bold]{tag}[/]: mmdebstrap {SUITE}") as status:
                self._run_mmdebstrap([*argv, str(rootfs), str(sources)], tag, status)
                status.update(f"[bold]{tag}[/]: importing the root file system")
                try:
                    self.client.api.import_image(
                        src=str(rootfs), repository=tag.split(":")[0], tag=tag.split(":")[1],
                        changes=[f"LABEL {IMAGE_LABEL}={recipe.name}-base"],
                    )
                except docker.errors.APIError as exc:
                    raise ImageBuildError(f"{tag}: import failed: {exc.explanation}") from exc
        self.console.print(f"built {tag} in {time.monotonic() - started:.1f}s")

    def _run_mmdebstrap(self, argv: list[str], tag: str, status) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=30)
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
            )
        except FileNotFoundError as exc:
            raise ImageBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)") \
                from exc
        watchdog = threading.Timer(MMDEBSTRAP_TIMEOUT_S, process.kill)
        watchdog.start()
        try:
            for line in process.stderr:
                tail.append(line.rstrip())
                if line.startswith("I: "):
                    status.update(f"[bold]{tag}[/]: mmdebstrap: {escape(line[3:].strip())}")
            returncode = process.wait()
        finally:
            watchdog.cancel()
        if returncode != 0:
            raise ImageBuildError(
                f"{tag}: mmdebstrap exited with {returncode}: " + " | ".join(list(tail)[-5:])
            )

    def _build_top(self, recipe: Recipe, base: str, tag: str) -> None:
        started = time.monotonic()
        self.console.print(f"building {tag} on {base}")
        context = context_tar(recipe.context_files())
        with self.console.status(f"[bold]{tag}[/]: building") as status:
            try:
                for chunk in self.client.api.build(
                    fileobj=io.BytesIO(context), custom_context=True, tag=tag,
                    buildargs={"BASE": base},
                    labels={IMAGE_LABEL: recipe.name, VERSION_LABEL: package_version()},
                    rm=True, forcerm=True, pull=False, decode=True,
                ):
                    if "error" in chunk:
                        raise ImageBuildError(f"{tag}: {chunk['error'].strip()}")
                    line = chunk.get("stream", "").strip()
                    if line.startswith("Step "):
                        status.update(f"[bold]{tag}[/]: {escape(line)}")
            except docker.errors.APIError as exc:
                raise ImageBuildError(f"{tag}: build failed: {exc.explanation}") from exc
        self.console.print(f"built {tag} in {time.monotonic() - started:.1f}s")
