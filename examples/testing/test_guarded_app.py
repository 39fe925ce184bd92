# test_guarded_app.py: your own app's guards, tested on real Redis and memcached.
import pytest
from quart import Quart

from quart_api.guards import Guards, cached, rate_limited

pytestmark = pytest.mark.asyncio


def create_app(redis_url: str, memcached_servers: str) -> tuple[Quart, list[str]]:
    """The app under test, and the views it really ran (a cache hit runs none)."""
    app = Quart(__name__)
    app.config.update(REDIS_URL=redis_url, MEMCACHED_SERVERS=memcached_servers)
    Guards(app)
    runs: list[str] = []

    @app.get("/things")
    @rate_limited(limit=2, minutes=1)
    @cached(minutes=5)
    async def things() -> dict[str, int]:
        runs.append("things")
        return {"things": 3}

    return app, runs


async def test_the_third_request_in_a_minute_is_limited(redis_url, memcached_servers):
    app, _ = create_app(redis_url, memcached_servers)  # both emptied for this test
    async with app.test_app() as test_app:
        client = test_app.test_client()
        statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_the_second_request_is_served_from_memcached(redis_url, memcached_servers):
    app, runs = create_app(redis_url, memcached_servers)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        first = await client.get("/things")
        second = await client.get("/things")
    assert await second.get_json() == await first.get_json()
    assert runs == ["things"]


async def test_counters_live_in_the_real_redis(redis_server, redis_url, memcached_servers):
    app, _ = create_app(redis_url, memcached_servers)
    async with app.test_app() as test_app:
        await test_app.test_client().get("/things")
    with redis_server.client() as client:  # a sync redis-py client, for checks
        assert client.dbsize() > 0
