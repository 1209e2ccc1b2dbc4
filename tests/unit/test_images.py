"""Image tags: derived from the inputs, stable, and split so code changes never rebuild the
slow Debian base. No container engine needed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from harness.lab.images import (
    APT_SOURCES_ENV,
    RECIPES,
    ImageBuildError,
    Recipe,
    context_tar,
    host_apt_sources,
)


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    directory = tmp_path / "images" / "thing"
    directory.mkdir(parents=True)
    (directory / "packages.txt").write_text("# comment\npython3\n\ntini\n")
    (directory / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY rootfs/ /\n")
    app = tmp_path / "app"
    (app / "__pycache__").mkdir(parents=True)
    (app / "main.py").write_text("print('hi')\n")
    (app / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    return Recipe("thing", directory, (("app", app),))


def test_tags_are_stable_for_unchanged_inputs(recipe: Recipe) -> None:
    assert recipe.tag() == recipe.tag()
    assert recipe.base_tag() == recipe.base_tag()
    assert recipe.tag().startswith("amphora-harness/thing:")
    assert recipe.base_tag().startswith("amphora-harness/thing-base:")


def test_a_code_change_rebuilds_only_the_top_layer(recipe: Recipe, tmp_path: Path) -> None:
    base, top = recipe.base_tag(), recipe.tag()
    (tmp_path / "app" / "main.py").write_text("print('changed')\n")
    assert recipe.base_tag() == base
    assert recipe.tag() != top


def test_a_new_file_or_dockerfile_change_rebuilds_the_top_layer(recipe: Recipe,
                                                                tmp_path: Path) -> None:
    top = recipe.tag()
    (tmp_path / "app" / "extra.py").write_text("")
    with_file = recipe.tag()
    assert with_file != top
    (recipe.directory / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    assert recipe.tag() not in (top, with_file)


def test_a_package_change_rebuilds_both(recipe: Recipe) -> None:
    base, top = recipe.base_tag(), recipe.tag()
    (recipe.directory / "packages.txt").write_text("python3\ntini\nhaproxy\n")
    assert recipe.base_tag() != base
    assert recipe.tag() != top


def test_package_comments_blank_lines_and_order_do_not_count(recipe: Recipe) -> None:
    base = recipe.base_tag()
    assert recipe.packages() == ["python3", "tini"]
    (recipe.directory / "packages.txt").write_text("tini\n# another comment\npython3\n")
    assert recipe.base_tag() == base


def test_caches_stay_out_of_the_build_context(recipe: Recipe) -> None:
    names = [f.arcname for f in recipe.context_files()]
    assert names == ["Dockerfile", "rootfs/app/main.py"]


def test_context_tar_is_reproducible_and_complete(recipe: Recipe) -> None:
    files = recipe.context_files()
    data = context_tar(files)
    assert data == context_tar(files)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("rootfs/app/main.py").read() == b"print('hi')\n"


def test_shipped_recipes_hold_what_the_images_need() -> None:
    amphora = RECIPES["amphora"]
    for package in ("haproxy", "keepalived", "iproute2", "nftables", "tini", "python3-flask",
                    "python3-psutil", "python3-cryptography"):
        assert package in amphora.packages()
    amphora_files = {f.arcname for f in amphora.context_files()}
    assert {"Dockerfile", "rootfs/usr/local/bin/amphora-agent",
            "rootfs/opt/amphora-agent/amphora_agent/main.py"} <= amphora_files
    member_files = {f.arcname for f in RECIPES["member"].context_files()}
    assert member_files == {"Dockerfile", "rootfs/opt/member/member_server.py"}


def test_apt_sources_come_from_the_environment_when_set(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "bookworm.sources"
    sources.write_text("Types: deb\nSuites: bookworm\n")
    monkeypatch.setenv(APT_SOURCES_ENV, str(sources))
    assert host_apt_sources() == sources


def test_missing_apt_sources_fail_with_a_hint(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(APT_SOURCES_ENV, str(tmp_path / "absent.list"))
    with pytest.raises(ImageBuildError, match=APT_SOURCES_ENV):
        host_apt_sources()
