"""The app factory's process-wide choices."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from quart_api.app import create_app
from quart_api.settings import Settings
from quart_api.testing import free_port
from tests.api.conftest import PASSWORD, bearer_maker, make_app, service_settings, user_maker


async def test_start_up_objects_are_frozen_when_serving_starts(tmp_path: Path) -> None:
    assert gc.get_freeze_count() == 0
    app = create_app(service_settings(tmp_path, gc_freeze=True))
    try:
        assert gc.get_freeze_count() == 0  # building the app is not serving it
        async with app.test_app():
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_gc_freeze_false_leaves_the_collector_alone(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path, gc_freeze=False))
    async with app.test_app():
        assert gc.get_freeze_count() == 0


def test_gc_freeze_is_on_unless_turned_off() -> None:
    assert Settings.from_env({}).gc_freeze is True
    assert Settings.from_env({"GC_FREEZE": "false"}).gc_freeze is False


# --- start-up through the documented serve command ------------------------------------

ROOT = Path(__file__).resolve().parent.parent
HYPERCORN = str(Path(sys.executable).parent / "hypercorn")
SETTING_NAMES = (
    "APP_ENV", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MEMCACHED_SERVERS",
    "API_RATE_LIMIT", "LOGIN_RATE_LIMIT", "PROTECT_LIMIT", "LOG_LEVEL",
)  # fmt: skip


def command_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without the service's settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}"
    env.update(settings)
    return env


def serve(tmp_path: Path, args: list[str], **settings: str) -> subprocess.CompletedProcess[str]:
    """``hypercorn [args] "quart_api.app:create_app()"`` until it exits (it must, here)."""
    return subprocess.run(
        [HYPERCORN, *args, "--bind", f"127.0.0.1:{free_port()}", "quart_api.app:create_app()"],
        cwd=ROOT,
        env=command_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


INVALID_SETTINGS = [
    ({"API_RATE_LIMIT": "lots"}, "API_RATE_LIMIT"),
    ({"APP_ENV": "production"}, "SECRET_KEY"),
    ({"REDIS_URL": "http://cache:s3cret@10.0.0.1:6379"}, "REDIS_URL"),
    ({"MEMCACHED_SERVERS": "memcached://127.0.0.1:11211"}, "MEMCACHED_SERVERS"),
    ({"DATABASE_URL": "mysql://app:s3cret@db/app"}, "DATABASE_URL"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "name"), INVALID_SETTINGS, ids=[n for _, n in INVALID_SETTINGS]
)
def test_production_serve_command_exits_non_zero_with_one_line_naming_the_setting(
    tmp_path: Path, settings: dict[str, str], name: str
) -> None:
    done = serve(tmp_path, ["--config", "hypercorn.toml"], **settings)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("quart-api: Setting ")
    assert name in done.stderr
    assert "s3cret" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["default-1", "2"])
def test_hypercorn_supervisor_exits_non_zero_when_its_workers_cannot_start(
    tmp_path: Path, workers: list[str]
) -> None:
    """hypercorn (0.18) lets its supervisor exit 0 after a worker failed; ours stops it.

    If a later hypercorn still loses the status, this fails: extend
    ``quart_api.startup.HYPERCORN_LOSES_WORKER_STATUS`` to it.
    """
    done = serve(tmp_path, workers, API_RATE_LIMIT="lots")
    assert done.returncode != 0
    assert done.stderr.splitlines()[0].startswith("quart-api: Setting API_RATE_LIMIT='lots'")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_production_serve_command_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [HYPERCORN, "--config", "hypercorn.toml", "--bind", f"127.0.0.1:{port}",
         "quart_api.app:create_app()"],
        cwd=ROOT,
        env=command_env(tmp_path, LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        answer = None
        for _ in range(300):  # bounded: 30 s
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    break
                time.sleep(0.1)
        assert answer is not None, process.stderr
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


# --- serving versus the CLI -----------------------------------------------------------


async def test_a_generated_secret_key_is_warned_of_when_serving_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(service_settings(tmp_path).replace(secret_key="", secret_key_generated=False))
    assert app.extensions["settings"].secret_key_generated
    assert "SECRET_KEY" not in caplog.text  # building the app (as the CLI does) is silent
    async with app.test_app():
        pass
    assert caplog.text.count("SECRET_KEY is not set") == 1


# --- the guards' stores at start-up ---------------------------------------------------


def _store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "do not answer at start-up" in r.getMessage()]


async def test_a_store_that_does_not_answer_is_warned_of_once_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    app = create_app(service_settings(tmp_path, redis_url=closed))
    async with app.test_app():
        client = app.test_client()
        for _ in range(3):
            await client.get("/healthz")
    warnings = _store_warnings(caplog)
    assert len(warnings) == 1
    assert "REDIS_URL" in warnings[0]
    assert "rate limits and bans are off" in warnings[0]
    assert "fail open" in warnings[0]
    assert "s3cret" not in warnings[0]


async def test_stores_that_answer_give_no_start_up_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, redis_url: str, memcached_servers: str
) -> None:
    app = create_app(
        service_settings(tmp_path, redis_url=redis_url, memcached_servers=memcached_servers)
    )
    async with app.test_app():
        pass
    assert _store_warnings(caplog) == []


# --- responses --------------------------------------------------------------------------


async def wire_headers(
    app: Quart, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str]]:
    """Status and headers exactly as the app hands them to the server (ASGI).

    The test client rebuilds a ``Response`` from them, which adds a default
    ``Content-Type`` and a ``Content-Length`` of its own: useless for this check.
    """
    payload = json.dumps(body).encode() if body is not None else b""
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if body is not None:
        raw.append((b"content-type", b"application/json"))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"localhost"), *raw],
        "client": ("127.0.0.1", 50000), "server": ("localhost", 80), "extensions": {},
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    received = [{"type": "http.request", "body": payload, "more_body": False}]
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if received:
            return received.pop(0)
        await finished.wait()  # the client stays connected until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    await app(scope, receive, send)  # type: ignore[arg-type]
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}


async def test_no_204_response_carries_content_headers(tmp_path: Path) -> None:
    """Every 204 route: token revocation, password change, logout, account deletion."""
    app = await make_app(tmp_path)
    async with app.test_app():
        alice = await user_maker(app)("alice")
        headers = await bearer_maker(app)(alice)
        token = await app.test_client().post(
            "/api/v1/auth/tokens", json={"name": "t", "scopes": ["users:read"]}, headers=headers
        )
        token_id = (await token.get_json())["data"]["id"]
        change = {"old_password": PASSWORD, "new_password": PASSWORD + " 2"}
        answers = [
            await wire_headers(app, "DELETE", f"/api/v1/auth/tokens/{token_id}", headers),
            await wire_headers(app, "POST", "/api/v1/users/current/password", headers, change),
            await wire_headers(app, "POST", "/api/v1/auth/logout", headers),
            await wire_headers(app, "DELETE", "/api/v1/users/current", headers),
        ]
    for status, sent in answers:
        assert status == 204
        assert "content-type" not in sent
        assert "content-length" not in sent


# --- make run ---------------------------------------------------------------------------


def make_run(tmp_path: Path, port: int, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "run", "HOST=127.0.0.1", f"PORT={port}"],
        cwd=ROOT,
        env=command_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_make_run_on_a_busy_port_says_so_in_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = make_run(tmp_path, port)
    assert done.returncode != 0
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"make run: cannot listen on HOST=127.0.0.1 PORT={port}")
    assert "make run PORT=" in first
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_make_run_with_an_invalid_setting_stops_in_one_line_naming_it(tmp_path: Path) -> None:
    done = make_run(tmp_path, free_port(), API_RATE_LIMIT="lots")
    assert done.returncode != 0
    assert done.stderr.splitlines()[0].startswith("alembic: Setting API_RATE_LIMIT='lots'")
    assert "Traceback" not in done.stderr


async def test_blueprint_hooks_run_as_quart_runs_them_for_nested_blueprints(
    tmp_path: Path,
) -> None:
    """The service's request class looks blueprint names up once; Quart's hooks see the same."""
    from quart import Blueprint, Request, request

    app = await make_app(tmp_path)
    ran: list[str] = []
    outer = Blueprint("outer", __name__, url_prefix="/outer")
    inner = Blueprint("inner", __name__, url_prefix="/inner")

    def hooks(name: str, blueprint: Blueprint) -> None:
        @blueprint.before_request
        async def before() -> None:
            ran.append(f"before {name}")

        @blueprint.after_request
        async def after(response: Any) -> Any:
            ran.append(f"after {name}")
            return response

    hooks("outer", outer)
    hooks("inner", inner)
    seen: list[tuple[list[str], list[str]]] = []

    @inner.get("/view")
    async def view() -> str:
        quarts = Request.blueprints.fget(request._get_current_object())  # type: ignore[attr-defined]
        seen.append((list(request.blueprints), quarts))
        return "ok"

    outer.register_blueprint(inner)
    app.register_blueprint(outer)
    response = await app.test_client().get("/outer/inner/view")
    assert response.status_code == 200
    assert seen == [(["outer.inner", "outer"], ["outer.inner", "outer"])]
    assert ran == ["before outer", "before inner", "after inner", "after outer"]
    for path in ("/healthz", "/no-such-route"):  # an app route, and no rule at all
        async with app.test_request_context(path):
            quarts = Request.blueprints.fget(request._get_current_object())  # type: ignore[attr-defined]
            assert request.blueprints == quarts


async def test_the_service_runs_sync_and_async_views_and_hooks_as_quart_does(
    tmp_path: Path,
) -> None:
    """``ensure_async`` passes an ``async def`` through at a glance; every other callable
    (a sync function, a partial) still gets Quart's own test, so sync ones run in its
    executor and async ones on the loop."""
    import functools
    import threading

    app = await make_app(tmp_path)
    on_loop: dict[str, bool] = {}

    def mark(name: str) -> None:
        on_loop[name] = threading.current_thread() is threading.main_thread()

    async def async_view() -> str:
        mark("async view")
        return "async def"

    def sync_view() -> str:
        mark("sync view")
        return "def"

    async def partial_view(word: str) -> str:
        mark("async partial")
        return word

    @app.before_request
    def sync_hook() -> None:
        mark("sync hook")

    @app.before_request
    async def async_hook() -> None:
        mark("async hook")

    app.add_url_rule("/t/async", "t_async", async_view)
    app.add_url_rule("/t/sync", "t_sync", sync_view)
    app.add_url_rule("/t/partial", "t_partial", functools.partial(partial_view, "partial"))
    client = app.test_client()
    bodies = {}
    for path in ("/t/async", "/t/sync", "/t/partial"):
        response = await client.get(path)
        assert response.status_code == 200, path
        bodies[path] = await response.get_data(as_text=True)
    assert bodies == {"/t/async": "async def", "/t/sync": "def", "/t/partial": "partial"}
    assert on_loop == {
        "sync hook": False,
        "async hook": True,
        "async view": True,
        "sync view": False,
        "async partial": True,
    }
    assert app.ensure_async(async_view) is async_view
