"""Which OpenStack Octavia the harness runs: a PyPI version, a local source checkout, or an
sdist/wheel file. One parser for the `--octavia-source` option, shared by whatever needs an
Octavia (the driver's virtualenv, the image of Octavia's amphora agent).

    parse_octavia_source("19.0.0")            PyPI, that exact version (None = the pinned one)
    parse_octavia_source("~/src/octavia")     a checkout (a directory with Octavia's setup.cfg)
    parse_octavia_source("octavia.tar.gz")    an sdist or a wheel

Each source has two identities:
- content_id(): changes whenever what would be installed changes (a version, or a hash of every
  file of a checkout or archive). For artefacts that copy the source, e.g. an image tag.
- install_id(): what an editable install depends on. A checkout is installed editable, so edits
  to its code take effect without reinstalling; only its location and its dependency files
  (requirements.txt, setup.cfg, pyproject.toml) key the install. For a version or an archive it
  is the content_id.

This module sits at the bottom of the harness: it imports nothing of it.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OCTAVIA_VERSION = "19.0.0"
# PEP 440 release versions with optional pre/post/dev parts, e.g. 19.0.0, 20.0.0.0rc1.
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".whl")
# Files of a checkout that decide what an install pulls in besides the code itself.
DEPENDENCY_FILES = ("requirements.txt", "setup.cfg", "setup.py", "pyproject.toml")
# Not part of a checkout's content: version control, caches and build output.
_SKIPPED_DIRS = {".git", ".tox", ".venv", "__pycache__", "build", "dist", ".eggs",
                 ".stestr", ".pytest_cache"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
ID_LENGTH = 12


class OctaviaSourceError(ValueError):
    """The --octavia-source value names no usable Octavia; the message says why."""


class SourceKind(enum.Enum):
    PYPI = "pypi"
    CHECKOUT = "checkout"
    ARCHIVE = "archive"


@dataclass(frozen=True)
class OctaviaSource:
    """kind, and location: the version (PYPI) or the absolute path (CHECKOUT, ARCHIVE)."""

    kind: SourceKind
    location: str

    @property
    def path(self) -> Path:
        if self.kind is SourceKind.PYPI:
            raise OctaviaSourceError(f"octavia {self.location} from PyPI has no local path")
        return Path(self.location)

    @property
    def is_default(self) -> bool:
        return self.kind is SourceKind.PYPI and self.location == DEFAULT_OCTAVIA_VERSION

    def label(self) -> str:
        """For people: where this Octavia comes from."""
        if self.kind is SourceKind.PYPI:
            return f"octavia {self.location} from PyPI"
        return f"octavia from the {self.kind.value} {self.location}"

    def pip_args(self) -> list[str]:
        """What `pip install` is given to install this Octavia (a checkout: editable)."""
        if self.kind is SourceKind.PYPI:
            return [f"octavia=={self.location}"]
        if self.kind is SourceKind.CHECKOUT:
            return ["-e", self.location]
        return [self.location]

    def content_id(self) -> str:
        """Changes whenever any installed byte would (see the module docstring)."""
        if self.kind is SourceKind.PYPI:
            return self.location
        if self.kind is SourceKind.CHECKOUT:
            return f"src-{tree_hash(self.path)[:ID_LENGTH]}"
        return f"archive-{file_hash(self.path)[:ID_LENGTH]}"

    def install_id(self) -> str:
        """Changes whenever an (editable) install would have to be redone."""
        if self.kind is not SourceKind.CHECKOUT:
            return self.content_id()
        digest = hashlib.sha256(self.location.encode())
        for name in DEPENDENCY_FILES:
            dependency = self.path / name
            digest.update(name.encode() + b"\0")
            if dependency.is_file():
                digest.update(dependency.read_bytes())
        return f"src-{digest.hexdigest()[:ID_LENGTH]}"


def parse_octavia_source(value: str | None, cwd: Path | None = None) -> OctaviaSource:
    """The Octavia that value names (see the module docstring); None or "" is the pinned
    version. Relative paths are taken from cwd (default: the current directory)."""
    if not value:
        return OctaviaSource(SourceKind.PYPI, DEFAULT_OCTAVIA_VERSION)
    value = value.strip()
    if _VERSION.match(value):
        return OctaviaSource(SourceKind.PYPI, value)
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    path = path.resolve()
    if path.is_dir():
        if not (path / "octavia" / "__init__.py").is_file():
            raise OctaviaSourceError(f"{path} is not an Octavia checkout: no octavia/__init__.py")
        if not any((path / name).is_file() for name in ("setup.cfg", "pyproject.toml")):
            raise OctaviaSourceError(f"{path} is not an installable Octavia checkout: no "
                                     "setup.cfg or pyproject.toml")
        return OctaviaSource(SourceKind.CHECKOUT, str(path))
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise OctaviaSourceError(f"{path} is neither an sdist nor a wheel "
                                     f"({', '.join(ARCHIVE_SUFFIXES)})")
        return OctaviaSource(SourceKind.ARCHIVE, str(path))
    raise OctaviaSourceError(
        f"--octavia-source {value!r} is not a version (e.g. {DEFAULT_OCTAVIA_VERSION}), nor an "
        f"existing checkout directory or sdist/wheel file ({path} does not exist)")


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkout_files(root: Path) -> list[str]:
    """The relative paths of a checkout's files, sorted as walked, leaving out version control,
    caches and build output (see _SKIPPED_DIRS): its content, for a hash or a copy."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs
                            if d not in _SKIPPED_DIRS and not d.endswith(_SKIPPED_SUFFIXES))
        found += [str(Path(directory, name).relative_to(root)) for name in sorted(files)
                  if not name.endswith(_SKIPPED_SUFFIXES)]
    return found


def tree_hash(root: Path) -> str:
    """sha256 over the relative path and content of every file of checkout_files(root)."""
    digest = hashlib.sha256()
    for relative in checkout_files(root):
        digest.update(relative.encode() + b"\0")
        digest.update(file_hash(root / relative).encode())
    return digest.hexdigest()
