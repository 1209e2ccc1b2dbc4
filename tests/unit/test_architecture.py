"""The harness's layering, read from its source with the standard library's ast (nothing is
imported or run):

- no import cycle among harness modules;
- harness packages follow the flow, bottom up: paths/polling < model < render < amphora_api < lab
  < drivers < observe < faults < bench < cli/pytest_plugin, and a module imports only from its
  own layer or a lower one (the lab never reaches up into the drivers or the faults);
- the agent stands alone: amphora_agent/ imports nothing from harness/ (it ships in the amphora
  image without it).

Every import statement counts, also one inside a function or under `if TYPE_CHECKING:`: each is
a dependency of the design even when it does not run at import time. An import counts for the
module it names; the packages around that module are not counted (a package's __init__ is a
facade that may import its own submodules lazily).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKED_PACKAGES = ("harness", "amphora_agent")

# The harness's packages (and its top-level modules) from the bottom up.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"paths", "polling", "octavia_source", "distribution"},
    {"model"},
    {"render"},
    {"amphora_api"},
    {"lab"},
    {"drivers"},
    {"observe"},
    {"faults"},
    {"bench"},
    {"cli", "pytest_plugin", "pytest_drivers", "pytest_distributed", "pytest_loader",
     "pytest_agents", "pytest_markers"},
))


@dataclass(frozen=True)
class Import:
    file: str  # posix path relative to the tree's root
    line: int
    importer: str  # dotted module names
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.imported}"


@dataclass(frozen=True, repr=False)
class SourceTree:
    modules: frozenset[str]
    imports: tuple[Import, ...]  # only those of modules of the checked packages

    def __repr__(self) -> str:  # short in a failure's traceback
        return f"SourceTree({len(self.modules)} modules, {len(self.imports)} imports)"

    def graph(self) -> dict[str, list[str]]:
        """Module -> the modules of the tree it imports."""
        edges: dict[str, set[str]] = {module: set() for module in self.modules}
        for item in self.imports:
            if item.imported in self.modules:
                edges[item.importer].add(item.imported)
        return {module: sorted(imported) for module, imported in edges.items()}


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, importer: str, is_package: bool,
                     modules: frozenset[str]) -> list[str]:
    """The modules one import statement names. `from package import name` names the module
    package.name when the tree has one, else package itself."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        anchor = package[:len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    names = [f"{base}.{alias.name}" for alias in node.names]
    return list(dict.fromkeys(name if name in modules else base for name in names))


def read_tree(root: Path, packages: Iterable[str] = CHECKED_PACKAGES) -> SourceTree:
    packages = tuple(packages)
    files = {module_name(root, path): path
             for package in packages for path in sorted((root / package).rglob("*.py"))}
    modules = frozenset(files)
    imports = []
    for importer, path in sorted(files.items()):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for imported in imported_modules(node, importer, path.name == "__init__.py",
                                             modules):
                if imported.split(".")[0] in packages:
                    imports.append(Import(path.relative_to(root).as_posix(), node.lineno,
                                          importer, imported))
    return SourceTree(modules, tuple(sorted(imports, key=lambda i: (i.file, i.line))))


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One path per back edge of a depth-first walk: empty exactly when there is no cycle."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        path.append(module)
        for imported in graph.get(module, ()):
            if imported in path:
                cycles.append([*path[path.index(imported):], imported])
            elif imported not in done:
                visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    return cycles


def layer_of(module: str) -> int | None:
    """The rank of a harness module's layer; the root package sits below everything (it runs
    before any of its modules)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    return next((rank for rank, layer in enumerate(LAYERS) if parts[1] in layer), None)


def in_package(module: str, package: str) -> bool:
    return module.split(".")[0] == package


def layering_violations(tree: SourceTree) -> list[str]:
    violations = []
    for item in tree.imports:
        if not (in_package(item.importer, "harness") and in_package(item.imported, "harness")):
            continue
        importer, imported = layer_of(item.importer), layer_of(item.imported)
        if importer is not None and imported is not None and imported > importer:
            violations.append(str(item))
    return violations


def agent_imports_of_harness(tree: SourceTree) -> list[str]:
    return [str(item) for item in tree.imports
            if in_package(item.importer, "amphora_agent") and in_package(item.imported, "harness")]


def harness_cycles(tree: SourceTree) -> list[str]:
    graph = {module: imported for module, imported in tree.graph().items()
             if in_package(module, "harness")}
    return [" -> ".join(cycle) for cycle in import_cycles(graph)]


# --- the tree as it is -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> SourceTree:
    return read_tree(REPO_ROOT)


def test_every_harness_module_has_a_layer_and_every_layer_exists(source: SourceTree):
    harness_modules = [m for m in source.modules if in_package(m, "harness")]
    unplaced = sorted(m for m in harness_modules if layer_of(m) is None)
    assert not unplaced, f"modules in no layer (add their package to LAYERS): {unplaced}"
    names = {m.split(".")[1] for m in harness_modules if "." in m}
    missing = sorted(set().union(*LAYERS) - names)
    assert not missing, f"LAYERS names packages harness does not have: {missing}"


def test_no_import_cycle_among_harness_modules(source: SourceTree):
    cycles = harness_cycles(source)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_harness_module_imports_from_a_higher_layer(source: SourceTree):
    violations = layering_violations(source)
    assert not violations, "imports from a higher layer:\n" + "\n".join(violations)


def test_the_agent_imports_nothing_from_the_harness(source: SourceTree):
    violations = agent_imports_of_harness(source)
    assert not violations, "the agent imports the harness:\n" + "\n".join(violations)


# --- the checks themselves, on a small tree made for them --------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_a_cycle_an_upward_import_and_an_agent_leaning_on_the_harness(
        tmp_path: Path):
    write_tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/paths.py": "",
        "harness/model/__init__.py": "from . import grammar\n",
        "harness/model/grammar.py": "from harness import paths\n",
        "harness/lab/__init__.py": "",
        "harness/lab/lab.py": ("from typing import TYPE_CHECKING\n"
                               "from harness.model import grammar\n"
                               "if TYPE_CHECKING:\n"
                               "    from harness.faults.injector import Fault\n"),
        "harness/faults/__init__.py": "",
        "harness/faults/injector.py": "def clean():\n    from ..lab.lab import Lab\n",
        "amphora_agent/__init__.py": "",
        "amphora_agent/main.py": "import os\nimport harness.paths\n",
    })
    tree = read_tree(tmp_path)
    assert tree.graph()["harness.model"] == ["harness.model.grammar"]
    assert tree.graph()["harness.model.grammar"] == ["harness.paths"]
    assert harness_cycles(tree) == [
        "harness.faults.injector -> harness.lab.lab -> harness.faults.injector"]
    assert layering_violations(tree) == ["harness/lab/lab.py:4 imports harness.faults.injector"]
    assert agent_imports_of_harness(tree) == ["amphora_agent/main.py:2 imports harness.paths"]


def test_a_tree_that_keeps_the_rules_passes(tmp_path: Path):
    write_tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/polling.py": "import harness.paths\n",
        "harness/paths.py": "",
        "harness/lab/__init__.py": "from harness.lab.lab import Lab\n",
        "harness/lab/lab.py": "from harness import polling\n",
        "harness/cli/__init__.py": "",
        "harness/cli/main.py": "from harness import pytest_plugin\nfrom harness.lab import Lab\n",
        "harness/pytest_plugin.py": "from harness.lab.lab import Lab\n",
        "amphora_agent/__init__.py": "",
        "amphora_agent/main.py": "from amphora_agent import __init__\n",
    })
    tree = read_tree(tmp_path)
    assert (harness_cycles(tree), layering_violations(tree), agent_imports_of_harness(tree)) == (
        [], [], [])
    assert "harness.lab" in tree.graph()["harness.cli.main"]
