"""The package's shape, measured: no import cycle (deferred imports count) and small modules.

`ablation_lab` is read as a graph of its modules' imports, every `import` statement at any
depth of a module (a function-level import is deferred, not absent). A cycle means two
modules cannot be understood or tested apart; this test names it.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "workflow" / "ablation_lab"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """The package's modules that a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ablation_lab":
            base = node.module.removeprefix("ablation_lab").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}".lstrip(".")
                found.add(child if child in MODULES else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("ablation_lab.") for a in node.names if a.name.startswith("ablation_lab.")}
    return {name for name in found if name in MODULES} - {""}


def test_the_package_has_no_import_cycle():
    graph = {name: imported(path) - {name} for name, path in MODULES.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_no_module_grows_past_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    oversized = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not oversized, f"over {MAX_LINES} lines (split by concern): {oversized}"


def test_sub_package_inits_import_nothing():
    """Importing `ablation_lab.runtime` (the job adapter's path) or any other sub-package costs nothing."""
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name:
            assert not imported(path), f"ablation_lab.{name} imports {sorted(imported(path))}"


def test_the_readme_is_a_door_to_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "README.md: at most 150 lines; the rest belongs in docs/"
    unlinked = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if f"docs/{page.name}" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
