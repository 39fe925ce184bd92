"""pyproject.toml and the lock: what `pip install` gives, and what `make test` installs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]


def locked() -> dict[str, list[Version]]:
    """constraints.txt as {name: [versions]} (one per Python range when they differ)."""
    pins: dict[str, list[Version]] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if match:
            name = match.group(1).lower().replace("_", "-")
            pins.setdefault(name, []).append(Version(match.group(2)))
    return pins


def test_the_lock_pins_every_dependency_within_its_bounds() -> None:
    """Fails after a pyproject.toml change without `make lock`."""
    pins = locked()
    own = {"quart-api"}
    for text in [*PROJECT["dependencies"], *(r for reqs in EXTRAS.values() for r in reqs)]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if name in own:
            continue
        assert name in pins, f"{name} is not in constraints.txt: run make lock"
        for version in pins[name]:
            assert version in requirement.specifier, f"{name}=={version} breaks {text!r}"


def test_every_runtime_dependency_has_a_floor() -> None:
    for text in [*PROJECT["dependencies"], *EXTRAS["service"]]:
        assert any(s.operator == ">=" for s in Requirement(text).specifier), text


def test_the_guards_need_none_of_the_service_extra() -> None:
    """`pip install quart-api` (no extra) is enough for `quart_api.guards`."""
    service_only = ["quart_auth", "quart_schema", "pydantic", "sqlalchemy", "asyncpg",
                    "aiosqlite", "alembic", "argon2"]  # fmt: skip
    code = (
        "import sys, quart_api.guards, quart_api.guards.stores;"
        f"print([m for m in {service_only!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_what_the_code_imports_is_declared() -> None:
    """click, flask and werkzeug are imported by our code, so they are ours to declare."""
    declared = {
        Requirement(text).name.lower() for text in [*PROJECT["dependencies"], *EXTRAS["service"]]
    }
    assert {"click", "flask", "werkzeug"} <= declared


def names(requirements: list[str]) -> set[str]:
    return {Requirement(text).name.lower() for text in requirements}


def test_the_plain_install_declares_only_what_the_guards_import() -> None:
    """`pip install quart-api`: the guards' own dependencies, nothing of the service."""
    assert names(PROJECT["dependencies"]) == {"quart", "werkzeug", "redis", "aiomcache", "msgpack"}


def test_prometheus_client_comes_with_the_service_and_the_metrics_extra() -> None:
    assert "prometheus-client" in names(EXTRAS["service"])
    assert names(EXTRAS["metrics"]) == {"prometheus-client"}


ADAPTED = {"sqlalchemy_asyncpg": "sqlalchemy", "quart_schema": "quart-schema"}


def test_each_adapter_names_the_bounds_pyproject_declares() -> None:
    """An adapter's docstring quotes the range in pyproject.toml; the lock falls inside it."""
    pins = locked()
    declared = {
        Requirement(text).name.lower(): Requirement(text).specifier for text in EXTRAS["service"]
    }
    for module, package in ADAPTED.items():
        docstring = ast.get_docstring(
            ast.parse((ROOT / "quart_api" / "adapters" / f"{module}.py").read_text())
        )
        assert docstring is not None
        specifier = declared[package]
        assert any(s.operator == "<" for s in specifier), f"{package} has no upper bound"
        quoted = re.search(r"``pyproject\.toml``: ``([^`]+)``", docstring)
        assert quoted is not None, f"{module}.py does not quote its range in pyproject.toml"
        assert SpecifierSet(quoted.group(1)) == specifier, (module, str(specifier))
        assert all(version in specifier for version in pins[package])
