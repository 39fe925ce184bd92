"""The pytest plugin, used exactly as a library user's suite uses it.

``examples/testing/`` is such a suite (the README shows it): its ``conftest.py`` loads
``quart_api.testing.fixtures`` and its tests use the fixtures on an app of their own.
pytester runs it in a fresh pytest process, in a directory outside this repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "testing"


def copy_example(pytester: pytest.Pytester) -> None:
    for path in EXAMPLE.glob("*.py"):
        pytester.makepyfile(**{path.stem: path.read_text()})


def test_a_users_suite_tests_its_guards_on_real_servers_from_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    copy_example(pytester)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=3)


def test_a_missing_server_binary_fails_the_fixture_naming_the_debian_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_example(pytester)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no redis-server there

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "real_redis")

    result.assert_outcomes(errors=1, deselected=2)
    result.stdout.fnmatch_lines(["*'redis-server' not found*apt-get install redis-server*"])


def test_the_readme_shows_the_example_suite_as_it_runs() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    section = readme.split("## Testing your own app against real servers", 1)[1]
    for path in EXAMPLE.glob("*.py"):
        assert f"```python\n{path.read_text()}```" in section, path.name
