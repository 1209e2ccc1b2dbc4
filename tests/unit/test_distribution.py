"""What the distribution promises: the agent alone needs flask, psutil and cryptography; the
harness is an extra; the shipped data is found through the package; results go where the user
is, never into the package."""

from __future__ import annotations

from importlib.metadata import requires
from pathlib import Path

import pytest

from harness import paths
from harness.distribution import (
    DISTRIBUTION,
    HARNESS_EXTRA,
    extra_requirements,
    missing_harness_requirements,
    package_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_extra_requirements_picks_the_named_extra_only():
    declared = ['flask>=2.2', 'docker>=6; extra == "harness"',
                "rich>=13 ; python_version >= '3' and extra == 'harness'",
                'ruff>=0.5; extra == "dev"', 'pytest-timeout>=2.2; extra == "harness"']
    assert extra_requirements(declared, "harness") == ["docker", "rich", "pytest-timeout"]
    assert extra_requirements(declared, "dev") == ["ruff"]
    assert extra_requirements(declared, "none") == []


def test_the_agent_needs_only_flask_psutil_and_cryptography():
    unconditional = [r.split(";")[0] for r in requires(DISTRIBUTION) if ";" not in r]
    names = sorted(r.split(">")[0].split("=")[0].strip() for r in unconditional)
    assert names == ["cryptography", "flask", "psutil"]
    heavy = set(extra_requirements(requires(DISTRIBUTION), HARNESS_EXTRA))
    assert {"docker", "pytest-testinfra", "pytest-timeout", "matplotlib", "rich"} <= heavy


def test_this_environment_has_the_harness_extra():
    assert missing_harness_requirements() == []
    assert package_version()[0].isdigit()


def test_shipped_data_is_the_checkouts_folders():
    # harness/data/* are links to the top-level folders: one copy of everything.
    assert paths.IMAGES_DIR == REPO_ROOT / "images"
    assert paths.FIXTURES_DIR == REPO_ROOT / "fixtures"
    assert paths.SCENARIOS_DIR == REPO_ROOT / "scenarios"
    for link in ("images", "fixtures", "scenarios"):
        assert (REPO_ROOT / "harness" / "data" / link).is_symlink()
    assert (paths.IMAGES_DIR / "amphora" / "amphora-init").is_file()
    assert (paths.SCENARIOS_DIR / "suites.ini").is_file()
    assert (paths.AGENT_PACKAGE_DIR / "__init__.py").is_file()
    assert paths.CHECKOUT_DIR == REPO_ROOT


def test_results_go_under_the_given_base_or_the_environments_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(paths.RESULTS_DIR_ENV, raising=False)
    assert paths.default_results_dir(tmp_path) == tmp_path / "results"
    monkeypatch.chdir(tmp_path)
    assert paths.default_results_dir() == tmp_path / "results"
    monkeypatch.setenv(paths.RESULTS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert paths.default_results_dir(tmp_path / "ignored") == tmp_path / "elsewhere"


def test_cache_dir_is_the_checkout_unless_the_environment_says(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(paths.CACHE_DIR_ENV, raising=False)
    assert paths.cache_dir() == REPO_ROOT
    monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path))
    assert paths.cache_dir() == tmp_path
