"""No import cycle anywhere in ``quart_api`` (the rule of /work/shared/tools/import_cycles.py).

Every import counts, module-level or inside a function; only imports under
``if TYPE_CHECKING:`` (never run) do not. Imports must run one way, so a newcomer can
follow a request down the package without going in circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import quart_api

_ROOT = Path(quart_api.__file__).parent


def _modules(root: Path) -> dict[str, Path]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (at any depth of its code)."""
    modules = _modules(root)
    package = root.name
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for statement in node.body
            for inner in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, module, is_package)
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if (
                    target
                    and target != module
                    and target.startswith(package)
                    and not module.startswith(target + ".")
                ):
                    edges[module].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_module_of_quart_api_imports_itself_in_a_circle() -> None:
    assert cycles(import_graph(_ROOT)) == []


def test_the_cycle_finder_finds_a_circle_held_together_by_a_function_local_import(
    tmp_path: Path,
) -> None:
    """The check above can fail: the pattern the guards used to hide behind is caught."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def later():\n    from pkg.a import x\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b"]]


def test_the_guards_stages_import_one_way() -> None:
    """extension -> pipeline -> cache -> state -> stores, never back up."""
    edges = import_graph(_ROOT)
    order = [
        "quart_api.guards._extension",
        "quart_api.guards._pipeline",
        "quart_api.guards._cache",
        "quart_api.guards._state",
        "quart_api.guards.stores",
    ]
    for lower, module in enumerate(order):
        for higher in order[:lower]:
            assert higher not in edges[module], f"{module} imports {higher}"
