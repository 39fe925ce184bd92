"""Every error is RFC 9457 problem+json, and no stack trace reaches a client."""

from __future__ import annotations

from pathlib import Path

from quart import Quart

from quart_api.app import create_app
from quart_api.testing import PostgresServer, free_port
from tests.api.conftest import PASSWORD, service_settings


async def test_unknown_path_is_problem_json_404(app: Quart) -> None:
    response = await app.test_client().get("/no/such/path")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    body = await response.get_json()
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert body["detail"]


async def test_wrong_method_is_problem_json_405_with_allow(app: Quart) -> None:
    response = await app.test_client().post("/healthz")
    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]
    assert (await response.get_json())["status"] == 405


async def test_oversized_body_is_problem_json_413(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path, max_content_length=2048))

    @app.post("/echo")
    async def echo() -> dict[str, int]:
        from quart import request

        return {"size": len(await request.get_data())}

    async with app.test_app():
        response = await app.test_client().post("/echo", data=b"x" * 4096)
    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert (await response.get_json())["status"] == 413


async def test_unhandled_error_is_500_without_traceback(tmp_path: Path, caplog) -> None:
    app = create_app(service_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    async with app.test_app():
        response = await app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.content_type == "application/problem+json"
    text = await response.get_data(as_text=True)
    assert "secret internals" not in text
    assert "Traceback" not in text
    assert any("secret internals" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_a_refused_database_connection_is_a_503_saying_refused(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://app:s3cret@127.0.0.1:{free_port()}/app"
    app = create_app(service_settings(tmp_path, database_url=url, database_timeout=2.0))
    async with app.test_app():
        response = await app.test_client().post(
            "/api/v1/users", json={"username": "alice", "password": PASSWORD}
        )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = await response.get_json()
    assert body["detail"] == "The database refused the connection; retry shortly."
    assert "s3cret" not in await response.get_data(as_text=True)


async def test_a_stalled_database_is_a_503_saying_it_did_not_answer_in_time(
    tmp_path: Path, postgres_server: PostgresServer, pg_database: str
) -> None:
    app = create_app(service_settings(tmp_path, database_url=pg_database, database_timeout=0.5))
    async with app.test_app():
        postgres_server.pause()  # SIGSTOP: connections are accepted, nothing answers
        try:
            response = await app.test_client().post(
                "/api/v1/users", json={"username": "alice", "password": PASSWORD}
            )
        finally:
            postgres_server.resume()
    assert response.status_code == 503
    body = await response.get_json()
    assert body["detail"] == "The database did not answer in time; retry shortly."
