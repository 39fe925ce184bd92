"""/metrics: Prometheus text for allowed addresses only, aggregated across workers."""

from __future__ import annotations

from pathlib import Path

from quart import Quart

from tests.api.conftest import make_app


async def test_metrics_expose_guard_counters_to_loopback(client) -> None:
    await client.get("/api/v1/share/nope")  # a guarded route: counts a protected failure
    response = await client.get("/metrics", scope_base={"client": ("127.0.0.1", 5000)})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = await response.get_data(as_text=True)
    assert "quart_api_protected_failures_total" in text
    assert "quart_api_rate_limit_requests_total" in text


async def test_metrics_are_hidden_from_addresses_off_the_allow_list(client) -> None:
    response = await client.get("/metrics", scope_base={"client": ("203.0.113.9", 5000)})
    assert response.status_code == 404


async def test_metrics_allow_list_accepts_networks(tmp_path: Path) -> None:
    app: Quart = await make_app(tmp_path, metrics_allow=("203.0.113.0/24",))
    async with app.test_app():
        client = app.test_client()
        allowed = await client.get("/metrics", scope_base={"client": ("203.0.113.9", 1)})
        refused = await client.get("/metrics", scope_base={"client": ("127.0.0.1", 1)})
    assert allowed.status_code == 200
    assert refused.status_code == 404


async def test_metrics_aggregate_worker_files_in_multiprocess_mode(tmp_path: Path) -> None:
    from prometheus_client import values
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: F401

    directory = tmp_path / "prom"
    directory.mkdir()
    # A file written by another worker process (pid 424242) of the same deployment.
    import os

    old = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    try:
        value = values.MultiProcessValue(lambda: 424242)(
            "counter", "quart_api_demo_total", "quart_api_demo_total", (), (), "demo"
        )
        value.inc(7)
    finally:
        if old is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = old
    app = await make_app(tmp_path, prometheus_multiproc_dir=str(directory))
    async with app.test_app():
        response = await app.test_client().get("/metrics", scope_base={"client": ("127.0.0.1", 1)})
    assert "quart_api_demo_total 7.0" in await response.get_data(as_text=True)
