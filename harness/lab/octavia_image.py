"""Builds `amphora-harness/octavia-amphora`: OpenStack Octavia's own amphora-agent under systemd
(PID 1) in a container image, from Debian packages and PyPI only, cached by content.

Three images, each tagged by a hash of its inputs and not rebuilt while the tag exists (as
harness.lab.images does for ours); the recipe lives in images/octavia-amphora/:

  octavia-amphora-base:<h>   mmdebstrap of packages.txt (ImageBuilder's base step).
  octavia-amphora-deps:<h>   + /opt/amphora-agent-venv with every pinned dependency of the agent
                             (constraints.txt; not Octavia) + setup-system.sh (systemd in a
                             container). The wheels are fetched once, in a container of the base
                             image (its python3, the host's network and CA bundle), and cached.
  octavia-amphora:<src>-<h>  + Octavia from the chosen --octavia-source and the source's own
                             diskimage-builder elements (setup-octavia.sh) + our additions
                             (rootfs/: the reindex helper and its boot unit, the agent's start
                             condition, the sysctl filter). <src> is the source's content_id().

Stages 2 and 3 each run as ONE container (context in by put_archive, no network) and ONE
`docker commit` with the image config: on fuse-overlayfs every layer commit walks the whole file
system, so a Dockerfile's commit per instruction costs minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from rich.console import Console

from harness.lab.images import (
    IMAGE_LABEL,
    REPOSITORY_PREFIX,
    ContextFile,
    ImageBuilder,
    ImageBuildError,
    Recipe,
    _build_lock,
    _digest,
    context_tar,
)
from harness.octavia_source import (
    OctaviaSource,
    SourceKind,
    checkout_files,
    file_hash,
    tree_hash,
)
from harness.paths import IMAGES_DIR, cache_dir

RECIPE_DIR = IMAGES_DIR / "octavia-amphora"
NAME = "octavia-amphora"
SOURCE_LABEL = "amphora-harness.octavia-source"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STAGE_TIMEOUT_S = 20 * 60
# Only these elements of Octavia's diskimage-builder tree are applied (setup-octavia.sh).
ELEMENTS = ("amphora-agent", "haproxy-octavia")
VENV = "/opt/amphora-agent-venv"

# The deps stage: the venv from the cached wheels, then the system set-up; the wheels are gone
# before the commit, so they are in no layer.
DEPS_SCRIPT = f"""
python3 -m venv {VENV}
{VENV}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
    --find-links /tmp/build/wheels -r /tmp/build/constraints.txt
/bin/sh /tmp/build/setup-system.sh
rm -rf /tmp/build
"""
# systemd is PID 1; `docker stop` sends it SIGRTMIN+3 (halt), not SIGTERM. A commit takes the
# build container's config with these on top, so Cmd is set again.
IMAGE_CONFIG = {"Cmd": ["/lib/systemd/systemd"], "StopSignal": "SIGRTMIN+3", "Entrypoint": []}
TOP_SCRIPT = "exec /bin/bash /tmp/octavia/setup-octavia.sh"
# How a source's kind is written into the image (label and /opt/amphora-agent.source).
_KIND_WORDS = {SourceKind.PYPI: "pypi", SourceKind.CHECKOUT: "dir"}


def image_cache_dir() -> Path:
    """Downloaded Octavia releases and the pinned wheels, kept between builds."""
    return cache_dir() / ".octavia-image"


def _files_under(arcname: str, source: Path) -> Iterator[ContextFile]:
    """Files keep their executable bit (the reindex helper is run as a program); programs in
    a bin/ or sbin/ folder are executable even where an install dropped the bit."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            executable = os.access(path, os.X_OK) or path.parent.name in ("bin", "sbin")
            mode = 0o755 if executable else 0o644
            yield ContextFile(f"{arcname}/{path.relative_to(source).as_posix()}",
                              path.read_bytes(), mode)


def _files_digest(files: list[ContextFile]) -> list[bytes]:
    parts = []
    for f in sorted(files, key=lambda f: f.arcname):
        parts += [f.arcname.encode(), str(f.mode).encode(), f.data]
    return parts


def _recipe_file(name: str) -> bytes:
    return (RECIPE_DIR / name).read_bytes()


# --- the Octavia source, as the image installs it ---------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """An OctaviaSource with what the build copies: installed (PyPI's wheel or sdist, the
    archive, or the checkout), its sha256 (a checkout's: its tree hash) and, for the elements
    wheels lack, the release's sdist."""

    source: OctaviaSource
    installed: Path
    sha256: str
    sdist: Path | None = None

    def describe(self) -> str:
        kind = _KIND_WORDS.get(self.source.kind) or (
            "wheel" if self.installed.suffix == ".whl" else "sdist")
        return f"{kind} {self.source.location} sha256:{self.sha256}"


def resolve(source: OctaviaSource) -> ImageSource:
    if source.kind is SourceKind.CHECKOUT:
        return ImageSource(source, source.path, tree_hash(source.path))
    if source.kind is SourceKind.ARCHIVE:
        return ImageSource(source, source.path, file_hash(source.path))
    # PyPI's own wheel where there is one (what `pip install` installs: nothing to build in the
    # image), and the sdist for elements/, which wheels do not carry.
    sdist = pypi_release_file(source.location, "sdist")
    if sdist is None:
        raise ImageBuildError(f"octavia {source.location} has no sdist on PyPI")
    installed = pypi_release_file(source.location, "wheel") or sdist
    return ImageSource(source, installed, file_hash(installed), sdist)


def _pip_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if HOST_CA_BUNDLE.is_file():
        env["PIP_CERT"] = str(HOST_CA_BUNDLE)
    return env


def pypi_release_file(version: str, kind: str) -> Path | None:
    """Octavia's sdist or wheel of that version, downloaded once into the cache; None if PyPI
    has no such file."""
    directory = image_cache_dir() / "sources"
    pattern = f"octavia-{version}.tar.gz" if kind == "sdist" else f"octavia-{version}-*.whl"
    found = sorted(directory.glob(pattern))
    if found:
        return found[0]
    missing = directory / f".no-{kind}-{version}"
    if missing.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    only = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", *only, "--no-deps",
             f"octavia=={version}", "-d", tmp],
            capture_output=True, text=True, env=_pip_environment(), timeout=600, check=False)
        got = sorted(Path(tmp).glob("octavia-*"))
        if result.returncode != 0 or len(got) != 1:
            if "No matching distribution" in result.stderr + result.stdout:
                missing.touch()
                return None
            raise ImageBuildError(f"pip download octavia=={version} ({kind}) failed: "
                                  f"{(result.stderr or result.stdout).strip()[-800:]}")
        target = directory / got[0].name
        got[0].rename(target)
    return target


def _sdist_elements(sdist: Path) -> list[ContextFile]:
    files = []
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")[1:]  # below the sdist's top directory
            if member.isfile() and len(parts) > 2 and parts[0] == "elements" \
                    and parts[1] in ELEMENTS:
                files.append(ContextFile(f"octavia/{'/'.join(parts)}",
                                         tar.extractfile(member).read(),
                                         0o755 if member.mode & 0o100 else 0o644))
    if not files:
        raise ImageBuildError(f"{sdist}: no elements/ in this sdist")
    return files


def _element_files(image_source: ImageSource) -> list[ContextFile]:
    """The used elements of the source itself (a wheel has none: its release's sdist's)."""
    source = image_source.source
    if source.kind is SourceKind.CHECKOUT:
        files = []
        for element in ELEMENTS:
            directory = source.path / "elements" / element
            if not directory.is_dir():
                raise ImageBuildError(f"{source.path}: no elements/{element}")
            files += _files_under(f"octavia/elements/{element}", directory)
        return files
    if image_source.installed.suffix != ".whl":
        return _sdist_elements(image_source.installed)
    if image_source.sdist is not None:
        return _sdist_elements(image_source.sdist)
    version = image_source.installed.name.split("-")[1]
    sdist = pypi_release_file(version, "sdist")
    if sdist is None:
        raise ImageBuildError(f"{source.path}: a wheel carries no elements/ and PyPI has no "
                              f"octavia {version} sdist to take them from")
    return _sdist_elements(sdist)


def _source_files(image_source: ImageSource) -> list[ContextFile]:
    """A checkout's files under octavia/source/tree/, an sdist or wheel as the file itself."""
    if image_source.source.kind is not SourceKind.CHECKOUT:
        path = image_source.installed
        return [ContextFile(f"octavia/source/{path.name}", path.read_bytes(), 0o644)]
    root = image_source.source.path
    relatives = checkout_files(root)
    # pbr takes a build's file list from git (the copy has none), else from an existing
    # octavia.egg-info/SOURCES.txt; without either only the top-level package goes into the
    # wheel and the agent cannot start ("No module named 'octavia.cmd'").
    manifest = "".join(f"{relative}\n" for relative in relatives)
    return [ContextFile(f"octavia/source/tree/{relative}", (root / relative).read_bytes(),
                        0o755 if (root / relative).stat().st_mode & 0o100 else 0o644)
            for relative in relatives] + [
        ContextFile("octavia/source/tree/octavia.egg-info/SOURCES.txt", manifest.encode(),
                    0o644)]


def pbr_version(source: OctaviaSource) -> str:
    """A checkout's version for pbr, which cannot ask git in the copy: $PBR_VERSION, else an
    unpacked sdist's PKG-INFO, else `git describe` (tag or tag.devN), else 0.0.0.dev0."""
    if os.environ.get("PBR_VERSION"):
        return os.environ["PBR_VERSION"]
    pkg_info = source.path / "PKG-INFO"
    if pkg_info.is_file():
        match = re.search(r"^Version: (\S+)", pkg_info.read_text(), re.M)
        if match:
            return match.group(1)
    if (source.path / ".git").exists() and shutil.which("git"):
        result = subprocess.run(["git", "-C", str(source.path), "describe", "--tags", "--long"],
                                capture_output=True, text=True, check=False, timeout=30)
        match = re.fullmatch(r"(\d+(?:\.\d+)*)-(\d+)-g[0-9a-f]+", result.stdout.strip())
        if match:
            return match.group(1) if match.group(2) == "0" else \
                f"{match.group(1)}.dev{match.group(2)}"
    return "0.0.0.dev0"


# --- tags ------------------------------------------------------------------------------------

BASE_RECIPE = Recipe(NAME, RECIPE_DIR, ())


def _deps_files() -> list[ContextFile]:
    return [ContextFile("build/constraints.txt", _recipe_file("constraints.txt"), 0o644),
            ContextFile("build/setup-system.sh", _recipe_file("setup-system.sh"), 0o755)]


def deps_tag() -> str:
    parts = [BASE_RECIPE.base_tag().encode(), DEPS_SCRIPT.encode(),
             json.dumps(IMAGE_CONFIG).encode(), *_files_digest(_deps_files())]
    return f"{REPOSITORY_PREFIX}{NAME}-deps:{_digest(*parts)}"


def _top_files(image_source: ImageSource) -> list[ContextFile]:
    """The top stage's inputs besides the source (its hash stands for it) and the build tools'
    wheels (build-constraints.txt stands for them)."""
    return [
        ContextFile("octavia/setup-octavia.sh", _recipe_file("setup-octavia.sh"), 0o755),
        ContextFile("octavia/build-constraints.txt", _recipe_file("build-constraints.txt"),
                    0o644),
        ContextFile("octavia/SOURCE", (image_source.describe() + "\n").encode(), 0o644),
        *_files_under("octavia/harness", RECIPE_DIR / "rootfs"),
        *_element_files(image_source),
    ]


def top_tag(image_source: ImageSource) -> str:
    is_checkout = image_source.source.kind is SourceKind.CHECKOUT
    parts = [deps_tag().encode(), TOP_SCRIPT.encode(), image_source.sha256.encode(),
             pbr_version(image_source.source).encode() if is_checkout else b"",
             *_files_digest(_top_files(image_source))]
    return (f"{REPOSITORY_PREFIX}{NAME}:{image_source.source.content_id()}-"
            f"{_digest(*parts)[:12]}")


# --- building --------------------------------------------------------------------------------


class OctaviaImageBuilder:
    """Makes sure the Octavia amphora image of a source exists, building the missing stages."""

    def __init__(self, client: docker.DockerClient, console: Console | None = None) -> None:
        self.images = ImageBuilder(client, console)
        self.client = client
        self.console = self.images.console

    def tag(self, source: OctaviaSource) -> str:
        return top_tag(resolve(source))

    def ensure(self, source: OctaviaSource) -> str:
        image_source = resolve(source)
        tag = top_tag(image_source)
        if self.images.exists(tag):
            return tag
        with _build_lock():
            if not self.images.exists(tag):
                self._build_top(image_source, tag)
        return tag

    def _ensure_base(self) -> str:
        base = BASE_RECIPE.base_tag()
        if not self.images.exists(base):
            self.images._build_base(BASE_RECIPE, base)
        return base

    def _ensure_deps(self) -> str:
        tag = deps_tag()
        if self.images.exists(tag):
            return tag
        base = self._ensure_base()
        files = _deps_files() + [
            ContextFile(f"build/wheels/{wheel.name}", wheel.read_bytes(), 0o644)
            for wheel in sorted(self._wheels(base).glob("*.whl"))]
        self._run_and_commit(base, files, DEPS_SCRIPT, tag, {IMAGE_LABEL: f"{NAME}-deps"})
        return tag

    def _build_top(self, image_source: ImageSource, tag: str) -> None:
        deps = self._ensure_deps()
        files = [*_top_files(image_source), *_source_files(image_source)]
        if image_source.installed.suffix != ".whl":
            # Octavia is built from source with the venv's pbr and setuptools; setuptools < 70.1
            # also needs `wheel`, which comes as a file, on PYTHONPATH for the build only.
            wheels = self._wheels(self._ensure_base())
            files += [ContextFile(f"octavia/buildwheels/{wheel.name}", wheel.read_bytes(), 0o644)
                      for wheel in wheels.glob("wheel-*.whl")]
        if image_source.source.kind is SourceKind.CHECKOUT:
            files.append(ContextFile("octavia/PBR_VERSION",
                                     pbr_version(image_source.source).encode(), 0o644))
        self._run_and_commit(deps, files, TOP_SCRIPT, tag,
                             {IMAGE_LABEL: NAME, SOURCE_LABEL: image_source.describe()})

    def _wheels(self, base: str) -> Path:
        """Every pinned wheel, fetched or built with the base image's python3, cached under the
        hash of the pins."""
        runtime, build = _recipe_file("constraints.txt"), _recipe_file("build-constraints.txt")
        target = image_cache_dir() / "wheels" / _digest(base.encode(), runtime, build)
        if (target / ".complete").is_file():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / "constraints.txt").write_bytes(runtime)
        (target / "build-constraints.txt").write_bytes(build)
        # --use-pep517: sdist-only pins build in an isolated environment (bookworm's pip 23
        # would call bdist_wheel directly).
        self._run_with_network(base, (
            "python3 -m venv /tmp/venv && /tmp/venv/bin/pip wheel --use-pep517 --no-deps "
            "-w /wheels -r /wheels/constraints.txt -r /wheels/build-constraints.txt"),
            {str(target): {"bind": "/wheels", "mode": "rw"}})
        (target / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        return target

    def _run_with_network(self, image: str, script: str, volumes: dict[str, dict]) -> None:
        """A throw-away container of image on the host's network: pip reaches PyPI as the host
        does (through the host's CA bundle, which a TLS-inspecting proxy needs)."""
        environment = {"PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                       "PIP_NO_CACHE_DIR": "1"}
        mounts = dict(volumes)
        if HOST_CA_BUNDLE.is_file():
            mounts[str(HOST_CA_BUNDLE.resolve())] = {"bind": "/etc/amphora-build-ca.pem",
                                                     "mode": "ro"}
            environment |= dict.fromkeys(
                ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"), "/etc/amphora-build-ca.pem")
        with self.console.status(f"[bold]{NAME}[/]: fetching the pinned wheels"):
            container = self.client.containers.run(
                image, ["/bin/sh", "-euxc", script], detach=True, network_mode="host",
                volumes=mounts, environment=environment,
                labels={IMAGE_LABEL: f"{NAME}-builder"})
            try:
                status = self._wait(container.id)
                output = container.logs().decode(errors="replace")
            finally:
                container.remove(force=True)
        if status != 0:
            raise ImageBuildError(f"fetching the pinned wheels failed ({status}):\n"
                                  + "\n".join(output.splitlines()[-25:]))

    def _wait(self, container_id: str) -> int:
        try:
            return self.client.api.wait(container_id, timeout=STAGE_TIMEOUT_S)["StatusCode"]
        except Exception as exc:  # requests' ReadTimeout: over the time limit
            raise ImageBuildError(f"build container timed out after {STAGE_TIMEOUT_S}s") \
                from exc

    def _run_and_commit(self, image: str, files: list[ContextFile], script: str, tag: str,
                        labels: dict[str, str]) -> None:
        """One stage: one container (no network) runs script over the files, one commit."""
        started = time.monotonic()
        self.console.print(f"building {tag} on {image}")
        api = self.client.api
        container = api.create_container(image, command=["/bin/sh", "-euc", script],
                                         network_disabled=True, entrypoint=[],
                                         labels={IMAGE_LABEL: f"{NAME}-builder"})
        try:
            with self.console.status(f"[bold]{tag}[/]: building"):
                api.put_archive(container["Id"], "/tmp",
                                context_tar(sorted(files, key=lambda f: f.arcname)))
                api.start(container["Id"])
                status = self._wait(container["Id"])
                if status != 0:
                    output = api.logs(container["Id"]).decode(errors="replace")
                    raise ImageBuildError(f"{tag}: build failed ({status}):\n"
                                          + "\n".join(output.splitlines()[-30:]))
                repository, version = tag.split(":")
                api.commit(container["Id"], repository=repository, tag=version,
                           conf={**IMAGE_CONFIG, "Labels": labels})
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"{tag}: {exc.explanation or exc}") from exc
        finally:
            api.remove_container(container["Id"], force=True, v=True)
        self.console.print(f"built {tag} in {time.monotonic() - started:.1f}s")
