"""--octavia-source: a version, a checkout or an archive, each with identities that change
exactly when what would be installed changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.octavia_source import (
    DEFAULT_OCTAVIA_VERSION,
    OctaviaSourceError,
    SourceKind,
    parse_octavia_source,
)


def checkout(root: Path) -> Path:
    (root / "octavia").mkdir(parents=True)
    (root / "octavia" / "__init__.py").write_text("")
    (root / "octavia" / "template.j2").write_text("maxconn {{ limit }}\n")
    (root / "setup.cfg").write_text("[metadata]\nname = octavia\n")
    (root / "requirements.txt").write_text("jinja2\n")
    return root


def test_no_value_is_the_pinned_version():
    source = parse_octavia_source(None)
    assert (source.kind, source.location) == (SourceKind.PYPI, DEFAULT_OCTAVIA_VERSION)
    assert source.is_default
    assert source.pip_args() == [f"octavia=={DEFAULT_OCTAVIA_VERSION}"]
    assert source.content_id() == source.install_id() == DEFAULT_OCTAVIA_VERSION


@pytest.mark.parametrize("version", ["18.0.1", "20.0.0.0rc1", "19.0.0.dev12"])
def test_versions_come_from_pypi(version):
    source = parse_octavia_source(version)
    assert source.kind is SourceKind.PYPI and not source.is_default
    assert source.label() == f"octavia {version} from PyPI"


def test_a_checkout_installs_editable_and_its_ids_follow_what_matters(tmp_path):
    root = checkout(tmp_path / "octavia-src")
    source = parse_octavia_source("octavia-src", cwd=tmp_path)
    assert (source.kind, source.location) == (SourceKind.CHECKOUT, str(root))
    assert source.pip_args() == ["-e", str(root)]
    content, install = source.content_id(), source.install_id()
    assert content.startswith("src-") and install.startswith("src-")

    # A template edit is new content, but the editable install already sees it.
    (root / "octavia" / "template.j2").write_text("maxconn 7\n")
    assert source.content_id() != content and source.install_id() == install
    # Caches and version control are not content.
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/x\n")
    (root / "octavia" / "__pycache__").mkdir()
    (root / "octavia" / "__pycache__" / "t.cpython-311.pyc").write_bytes(b"\0")
    edited = source.content_id()
    assert parse_octavia_source(str(root)).content_id() == edited
    # A new dependency needs a new install.
    (root / "requirements.txt").write_text("jinja2\npyroute2\n")
    assert source.install_id() != install and source.content_id() != edited


def test_an_archive_is_identified_by_its_bytes(tmp_path):
    sdist = tmp_path / "octavia-19.0.0.tar.gz"
    sdist.write_bytes(b"one")
    source = parse_octavia_source(str(sdist))
    assert source.kind is SourceKind.ARCHIVE and source.pip_args() == [str(sdist)]
    first = source.content_id()
    sdist.write_bytes(b"two")
    assert source.content_id() != first and source.install_id() == source.content_id()


@pytest.mark.parametrize("value, message", [
    ("no/such/dir", "does not exist"),
    ("not-a-version", "is not a version"),
])
def test_what_names_no_octavia_is_refused_saying_why(tmp_path, value, message):
    with pytest.raises(OctaviaSourceError, match=message):
        parse_octavia_source(value, cwd=tmp_path)


def test_a_directory_or_file_that_is_not_octavia_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OctaviaSourceError, match="not an Octavia checkout"):
        parse_octavia_source(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OctaviaSourceError, match="neither an sdist nor a wheel"):
        parse_octavia_source(str(tmp_path / "notes.txt"))
