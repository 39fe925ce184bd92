"""``pip install quart-api`` alone: the guards serve, the service names the extra it needs.

A fresh virtual environment (no system site-packages) gets the package built from a
copy of this worktree's sources, pinned by ``constraints.txt``, with no extra; every
check then runs a script in that environment. pip installs from its cache and the
configured indexes; when it cannot reach them, the tests are skipped, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quart_api.testing import MemcachedServer, RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 300  # seconds; from the cache it takes a few
#: What pip says when it cannot reach an index: the only reason to skip.
OFFLINE_SIGNS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No route to host",
    "ConnectTimeoutError",
)
#: The service's own dependencies (import names): none may come with the plain install.
SERVICE_ONLY = (
    "quart_auth", "quart_schema", "pydantic", "sqlalchemy", "asyncpg", "aiosqlite",
    "alembic", "argon2", "orjson", "prometheus_client",
)  # fmt: skip


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a new venv holding ``pip install <worktree copy>``, no extra."""
    base = tmp_path_factory.mktemp("guards-only")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "quart_api", source / "quart_api", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    interpreter = venv / "bin" / "python"
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(interpreter), "install",
            "--quiet", "--no-input", "-c", str(ROOT / "constraints.txt"), str(source),
        ],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if any(sign in output for sign in OFFLINE_SIGNS):
            pytest.skip(f"pip cannot install offline here: {output.strip()[-500:]}")
        pytest.fail(f"pip install of the plain package failed:\n{output[-4000:]}")
    return interpreter


def run(python: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by the venv's interpreter, outside the worktree (no source on the path)."""
    return subprocess.run(
        [str(python), "-I", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=python.parent,
        check=False,
    )


def test_the_plain_install_brings_none_of_the_service_dependencies(python: Path) -> None:
    done = run(
        python,
        """
        import importlib.util, json, sys
        import quart_api.guards
        print(json.dumps({
            "file": quart_api.guards.__file__,
            "installed": [m for m in sys.argv[1:] if importlib.util.find_spec(m)],
        }))
        """,
        *SERVICE_ONLY,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["installed"] == []
    assert str(ROOT) not in found["file"]  # the installed copy, not the worktree


def test_a_guarded_app_answers_through_the_test_client_on_real_servers(
    python: Path,
    redis_url: str,
    memcached_servers: str,
    redis_server: RedisServer,
    memcached_server: MemcachedServer,
) -> None:
    done = run(
        python,
        """
        import asyncio, json, sys
        from quart import Quart
        from quart_api.guards import Guards, cached, protected, rate_limited

        app = Quart("tiny")
        app.config.update(REDIS_URL=sys.argv[1], MEMCACHED_SERVERS=sys.argv[2])
        guards = Guards(app)
        views = {"things": 0, "secret": 0}

        @app.get("/things")
        @rate_limited(limit=2, minutes=1)
        @cached(minutes=1)
        async def things():
            views["things"] += 1
            return {"things": views["things"]}

        @app.get("/secret/<guess>")
        @protected(limit=1, minutes=1)
        async def secret(guess):
            views["secret"] += 1
            return {"detail": "wrong guess"}, 404

        async def main():
            async with app.test_app() as test_app:
                client = test_app.test_client()
                things = [await client.get("/things") for _ in range(3)]
                secrets = [await client.get(f"/secret/{n}") for n in range(2)]
                print(json.dumps({
                    "things": [r.status_code for r in things],
                    "bodies": [await r.get_json() for r in things[:2]],
                    "retry_after": things[2].headers.get("Retry-After"),
                    "secrets": [r.status_code for r in secrets],
                    "views": views,
                }))

        asyncio.run(main())
        """,
        redis_url,
        memcached_servers,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["things"] == [200, 200, 429]
    assert seen["bodies"] == [{"things": 1}, {"things": 1}]  # the second from memcached
    assert seen["retry_after"] is not None
    assert seen["secrets"] == [404, 404]
    assert seen["views"] == {"things": 1, "secret": 1}  # the banned guess never ran
    with redis_server.client() as client:
        assert client.dbsize() > 0  # counters and bans in the real Redis
    assert int(memcached_server.stats()["curr_items"]) > 0  # the entry in the real memcached


def test_importing_the_service_names_the_extra_to_install(python: Path) -> None:
    done = run(python, "import quart_api.app")

    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("quart_api.service_extra.ServiceExtraMissing: quart_api.app")
    assert 'pip install "quart-api[service]"' in last_line
    assert any(f"needs {module!r}" in last_line for module in SERVICE_ONLY), last_line


def test_the_test_servers_import_without_the_service_extra(python: Path) -> None:
    done = run(
        python,
        """
        import json, sys
        import quart_api.testing
        print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
        """,
        *SERVICE_ONLY,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
