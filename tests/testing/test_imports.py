"""Imports run one way: tests and bench both use quart_api.testing, never each other.

``quart_api.testing`` itself needs only what ``pip install quart-api`` brings (the
standard library and redis-py; pytest in the plugin) and never imports the service.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Tests that run a benchmark, or test the bench's own parts, import it by design.
BENCH_TESTS = {
    "tests/test_bench_smoke.py",
    "tests/test_cluster_bench_smoke.py",
    "tests/resilience/test_chaos.py",
}


def imported(path: Path) -> Iterator[str]:
    """Every module ``path`` imports (absolute names; relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield f"{base}.{node.module}" if node.module else base
            elif node.module is not None:
                yield node.module


def top(module: str) -> str:
    return module.partition(".")[0]


def test_quart_api_testing_imports_only_the_stdlib_redis_and_pytest() -> None:
    for path in sorted((ROOT / "quart_api" / "testing").glob("*.py")):
        allowed = {"redis"} | ({"pytest"} if path.name == "fixtures.py" else set())
        for module in imported(path):
            if top(module) == "quart_api":
                assert module.startswith("quart_api.testing"), f"{path.name} imports {module}"
            else:
                assert top(module) in sys.stdlib_module_names | allowed, (
                    f"{path.name} imports {module}"
                )


def test_no_test_helper_imports_bench() -> None:
    for path in sorted((ROOT / "tests").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in BENCH_TESTS or name.startswith("tests/bench/"):
            continue
        assert not any(top(m) == "bench" for m in imported(path)), f"{name} imports bench"


def test_bench_never_imports_tests() -> None:
    for path in sorted((ROOT / "bench").rglob("*.py")):
        assert not any(top(m) == "tests" for m in imported(path)), f"{path} imports tests"
