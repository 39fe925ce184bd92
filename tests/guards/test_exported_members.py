"""`quart_api.guards.__all__` is exactly its public names (as in httpx's test of that name)."""

from __future__ import annotations

import importlib
import pkgutil
import types

import quart_api.guards as guards


def test_all_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(guards).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(guards.__all__) == public
    assert len(guards.__all__) == len(set(guards.__all__))


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    for name in guards.__all__:
        value = getattr(guards, name)
        if isinstance(value, (type, types.FunctionType)):
            assert value.__doc__, f"{name} has no docstring"


def test_every_private_module_declares_its_all() -> None:
    for info in pkgutil.iter_modules(guards.__path__):
        module = importlib.import_module(f"{guards.__name__}.{info.name}")
        assert isinstance(getattr(module, "__all__", None), list), f"{info.name} lacks __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_the_guards_package_imports_nothing_of_the_service() -> None:
    """``guards/`` must stay usable by an app without the rest of ``quart_api``."""
    import subprocess
    import sys

    prefix = f"{guards.__name__}."
    modules = ", ".join(repr(info.name) for info in pkgutil.walk_packages(guards.__path__, prefix))
    code = (
        "import importlib, sys;"
        f"[importlib.import_module(m) for m in ({modules},)];"
        "bad = sorted(m for m in sys.modules if m.startswith('quart_api.')"
        " and not m.startswith('quart_api.guards') or m.startswith('sqlalchemy'));"
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_guards_source_names_another_part_of_the_package() -> None:
    """Also the imports that only run later (inside functions): read every source file."""
    import ast
    from pathlib import Path

    root = Path(guards.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(root)}: {name}"
                for name in names
                if name.startswith("quart_api") and not name.startswith("quart_api.guards")
            ]
    assert offenders == []
