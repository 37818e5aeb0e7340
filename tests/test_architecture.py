"""The package's shape: the import contracts of pyproject.toml hold, and no module imports itself back."""

# The contracts ([tool.importlinter] in pyproject.toml) state the layers: cli → demo → the library's
# capabilities → db → errors; capabilities on one layer are independent of each other. When one
# breaks, lint-imports names the importing line: move the import down a layer, or move the code
# it needs below both.

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

import pgmlops

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing: install the test extra (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"lint-imports exited {run.returncode}:\n{output}"
    assert "0 broken" in output and "kept" in output, output


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_module_imports_itself_back() -> None:
    # Imports under `if TYPE_CHECKING:` are left out: they never run, so they cannot cycle.
    graph = grimp.build_graph("pgmlops", exclude_type_checking_imports=True, cache_dir=None)
    assert Path(pgmlops.__file__).resolve().is_relative_to(SRC), f"pgmlops is imported from {pgmlops.__file__}, not {SRC}"
    cycles = _cycles(graph)
    lines = []
    for cycle in cycles:
        lines.append(" ↔ ".join(cycle))
        for importer in cycle:
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & set(cycle)):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(f"    {importer}:{detail['line_number']} {detail['line_contents']}")
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.e")]:
        graph.add_import(importer=importer, imported=imported)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_mypy_strict_passes_on_src() -> None:
    # [tool.mypy] in pyproject.toml: strict over src/pgmlops. A cache per interpreter keeps reruns
    # quick; a cold run takes about a minute.
    mypy = Path(sys.executable).parent / "mypy"
    assert mypy.exists(), f"{mypy} is missing: install the test extra (pip install -e '.[test]')"
    run = subprocess.run([str(mypy), "--cache-dir", str(ROOT / ".mypy_cache")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"mypy --strict found problems:\n{output}"
    assert "Success: no issues found" in output, output
