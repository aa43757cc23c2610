"""The package's import graph, read from the source, has no cycle.

Every `import` and `from ... import` counts wherever it is written (module level, inside a
function, under TYPE_CHECKING). `from P import name` is an edge to P (its `__init__` when P is
a package) and, when `P.name` is a module, also to that module; relative imports are resolved.
The parents a dotted import loads on the way (`sidecar` for `sidecar.core.models`) are not
edges: every module would otherwise close a cycle through the top package's `__init__`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import sidecar

PACKAGE_ROOT = Path(sidecar.__file__).parent


def module_names(root: Path = PACKAGE_ROOT, top: str = "sidecar") -> dict[str, Path]:
    """Module name -> source file, packages named by their __init__."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [top, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_package(name: str, modules: Mapping[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imports_of(name: str, modules: Mapping[str, Path]) -> set[str]:
    """The package modules `name` imports."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, modules) for name in modules}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph(module_names())) is None


def test_the_graph_sees_function_level_relative_and_package_imports(tmp_path: Path) -> None:
    # A scratch package with one cycle of each kind the real test must catch.
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub.b import thing\n")
    (pkg / "a.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from pkg import a\nthing = 1\n")
    (pkg / "d.py").write_text("from pkg import c\n")
    modules = module_names(pkg, "pkg")
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg", "pkg.c"}  # function level, relative
    assert graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.sub.b"] == {"pkg", "pkg.a"}  # a package's import is its __init__
    assert graph["pkg"] == {"pkg.sub.b"}
    assert find_cycle(graph) is not None
    assert find_cycle({"x": {"y"}, "y": set()}) is None
