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
    """``guards/`` must stay usable by an app without our models, API or auth."""
    import subprocess
    import sys

    code = (
        "import sys, quart_api.guards, quart_api.guards.stores.uri;"
        "bad = [m for m in sys.modules if m.startswith(('quart_api.models', 'quart_api.api',"
        " 'quart_api.auth', 'quart_api.db', 'sqlalchemy'))];"
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
