"""The agent alone: the wheel installed without the harness extra pulls none of the harness's
dependencies. A user's own project: the wheel is built from this tree, installed into a fresh
virtualenv outside the checkout, and used from an empty folder — a test file of the user's with
the lab and amphora_client fixtures under --strict-markers, then `amphora-harness run smoke`.
Results land in that folder, nothing in the installed package.

The venv gets its dependencies from the package index (constraints.txt pins them, as in CI);
Octavia's driver venv, which the smoke suite's Octavia test needs, is the one scripts/bootstrap
made in the checkout ($AMPHORA_HARNESS_CACHE_DIR points there: making another takes minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from harness.paths import CACHE_DIR_ENV, CHECKOUT_DIR
from tests.packaging.support import default_signal_dispositions

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(CHECKOUT_DIR is None, reason="builds the wheel from a checkout"),
]
# What the wheel is built from (a copy: building writes build/ and egg-info next to the sources).
SOURCES = ("pyproject.toml", "README.md", "harness", "amphora_agent", "images", "fixtures",
           "scenarios")
STEP_TIMEOUT_S = 900

USER_TEST = '''
import sys

import harness


def test_the_installed_harness_drives_a_lab_amphora(lab, amphora_client, members):
    # The harness comes from the venv, not from a checkout.
    assert harness.__file__.startswith(sys.prefix)
    info = amphora_client.get_info()
    assert info["api_version"] == "1.0"
    assert len(members) == 2
    assert lab.id
'''


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT_S, preexec_fn=default_signal_dispositions)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    return done


def copy_sources(destination: Path) -> None:
    """The tree's files as git knows them (committed or not, ignored ones left out); the links
    of harness/data stay links."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "--", *SOURCES], CHECKOUT_DIR)
    for name in filter(None, listed.stdout.splitlines()):
        source, target = CHECKOUT_DIR / name, destination / name
        if not (source.exists() or source.is_symlink()):
            continue  # deleted in the work tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    copy_sources(root / "src")
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
         str(root / "dist"), str(root / "src")], root)
    [built] = (root / "dist").glob("amphora_harness-*.whl")
    return built


def test_the_wheel_ships_the_data_and_the_agent_needs_three_libraries(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        init = archive.getinfo("harness/data/images/amphora/amphora-init")
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    for shipped in ("harness/data/images/amphora/Dockerfile",
                    "harness/data/images/member/packages.txt",
                    "harness/data/fixtures/lbs/http.yaml",
                    "harness/data/fixtures/topologies/single.yaml",
                    "harness/data/scenarios/suites.ini",
                    "harness/data/scenarios/smoke/test_smoke.py",
                    "harness/render/templates/haproxy.cfg.j2"):
        assert shipped in names
    assert init.external_attr >> 16 & 0o111, "amphora-init must stay executable"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    unconditional = sorted(line.split(":", 1)[1].strip().split(">")[0]
                           for line in metadata.splitlines()
                           if line.startswith("Requires-Dist:") and ";" not in line)
    assert unconditional == ["cryptography", "flask", "psutil"]


def test_the_agent_alone_installs_without_the_harness(wheel: Path, tmp_path: Path) -> None:
    """`pip install amphora-harness` is the agent: none of the harness's dependencies come
    along, the command says what to install, and pytest (present for other reasons) still runs
    with the plugin off."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(CHECKOUT_DIR / "constraints.txt"), str(wheel), "pytest"], tmp_path)
    installed = run([str(python), "-m", "pip", "list", "--format=freeze"], tmp_path).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert {"flask", "psutil", "cryptography"} <= names
    assert not names & {"docker", "matplotlib", "rich", "pytest-testinfra", "pytest-timeout"}
    assert run([str(venv / "bin" / "amphora-agent"), "--help"], tmp_path).stdout

    hint = subprocess.run([str(venv / "bin" / "amphora-harness"), "status"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert hint.returncode == 2
    assert "pip install 'amphora-harness[harness]'" in hint.stderr
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    other = run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "test_other.py"],
                tmp_path)
    assert "lab fixtures off, the harness extra is not installed" in other.stdout
    assert "1 passed" in other.stdout


def test_a_user_project_uses_the_installed_harness(
        wheel: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    provider = request.config.getoption("--provider")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python, command = venv / "bin" / "python", venv / "bin" / "amphora-harness"
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(CHECKOUT_DIR / "constraints.txt"), f"{wheel}[harness]"], tmp_path)
    site = Path(run([str(python), "-c", "import harness, pathlib; "
                     "print(pathlib.Path(harness.__file__).parent)"], tmp_path).stdout.strip())

    user = tmp_path / "user"
    user.mkdir()
    (user / "test_mine.py").write_text(USER_TEST)
    env = os.environ | {CACHE_DIR_ENV: str(CHECKOUT_DIR)}
    mine = run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers", "-q",
                f"--provider={provider}", "test_mine.py"], user, env)
    assert "1 passed" in mine.stdout

    suites = run([str(command), "run", "smoke", f"--provider={provider}"], user, env)
    [junit] = (user / "results" / "run").glob("*/smoke.xml")
    totals = ET.parse(junit).getroot().find("testsuite")
    assert int(totals.get("tests")) >= 10 and totals.get("failures") == "0" and \
        totals.get("errors") == "0", suites.stdout
    assert (user / "results" / "labs").is_dir()  # node logs, under the user's folder
    # Nothing was written into the installed package.
    assert not (site / "data" / "results").exists()
    assert not list(site.parent.glob("**/.pytest_cache"))
