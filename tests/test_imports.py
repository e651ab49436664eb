"""No import circle among hbt's modules, counting imports inside functions too.

A function-level import hides a circle from Python (it resolves at call time) but not from a
reader: the two modules still depend on each other, so neither can be understood, moved or
tested alone. The graph is read with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hbt"

def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The hbt modules `path` imports anywhere in its body (a `from pkg import sub` names the submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    """Each hbt module -> the hbt modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that import each other, directly or through others."""
    reach = {module: reachable(graph, module) for module in graph}
    return {frozenset({module} | {other for other in reach[module] if module in reach[other]})
            for module in graph if module in reach[module]}


def test_the_graph_sees_function_level_imports_and_circles():
    graph = import_graph()
    assert "hbt.cli_parser" in graph["hbt.cli"]  # module level
    assert "hbt.train.driver" in graph["hbt.cli"]  # inside _cmd_train
    assert "hbt.tune.space" in graph["hbt.jobs.spec"]  # inside step_argv
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_no_import_circle_among_hbt_modules():
    found = sorted(sorted(circle) for circle in circles(import_graph()))
    assert found == [], f"import circles: {found}"
