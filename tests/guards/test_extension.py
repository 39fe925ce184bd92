"""``Guards`` itself: the stores it is given, and the key prefix that keeps apps apart."""

from __future__ import annotations

import re

import pytest
from quart import Quart

from quart_api.guards import Guards, cached, rate_limited
from quart_api.guards.stores import MemoryCacheStore, MemoryCounterStore
from tests.guards.conftest import Backend, serving


def _app(backend: Backend, import_name: str, body: str, **options: object) -> Quart:
    """An app named ``import_name`` whose cached, limited ``/things`` answers ``body``."""
    app = Quart(import_name)
    Guards(
        app,
        redis_url=backend.redis_url,
        memcached_servers=backend.memcached_servers,
        **options,  # type: ignore[arg-type]
    )

    @app.get("/things")
    @rate_limited(limit=1, minutes=1)
    @cached(minutes=5)
    async def things() -> str:
        return body

    return app


def _shared(backend: Backend) -> dict[str, object]:
    """Stores the two apps of a test share: the servers, or one memory store of each kind."""
    if backend.real:
        return {}
    return {"counter_store": MemoryCounterStore(), "cache_store": MemoryCacheStore()}


async def test_two_apps_on_one_memcached_and_redis_keep_their_own_bodies_and_budgets(
    backend: Backend,
) -> None:
    shared = _shared(backend)
    shop = _app(backend, "shop.app", "shop", **shared)
    blog = _app(backend, "blog.app", "blog", **shared)
    async with serving(shop) as shop_client, serving(blog) as blog_client:
        first = await shop_client.get("/things")
        other = await blog_client.get("/things")
    assert await first.get_data() == b"shop"
    assert other.status_code == 200, "the other app's request spent this app's budget"
    assert await other.get_data() == b"blog", "the other app's cached body was served"


async def test_an_explicit_key_prefix_lets_two_apps_share_their_keys(backend: Backend) -> None:
    shared = _shared(backend)
    shop = _app(backend, "shop.app", "shop", key_prefix="shared", **shared)
    blue = _app(backend, "shop.blue", "shop", key_prefix="shared", **shared)
    async with serving(shop) as shop_client, serving(blue) as blue_client:
        await shop_client.get("/things")
        other = await blue_client.get("/things")
    assert other.status_code == 429, "one prefix: one budget"


def test_the_default_key_prefix_is_short_safe_and_stable_per_app() -> None:
    names = ["quart_api.app", "shop.app", "shop_app", "shop-app", "x" * 300, "__main__", "é"]
    prefixes = []
    for name in names:
        app = Quart(name)
        Guards(app)
        prefixes.append(app.extensions["guards"].key_prefix)
        again = Quart(name)
        Guards(again)
        assert again.extensions["guards"].key_prefix == prefixes[-1], "same app, same keys"
    assert len(set(prefixes)) == len(names)
    for prefix in prefixes:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,33}", prefix), prefix


def test_the_key_prefix_setting_overrides_the_default() -> None:
    app = Quart("shop.app")
    app.config["GUARDS_KEY_PREFIX"] = "shop"
    Guards(app)
    assert app.extensions["guards"].key_prefix == "shop"


@pytest.mark.parametrize("prefix", ["", "a:b", "a{b}", "a*", "x" * 65, "é"])
def test_a_key_prefix_that_could_break_keys_or_patterns_is_refused(prefix: str) -> None:
    from quart_api.guards import ConfigurationError

    with pytest.raises(ConfigurationError, match="GUARDS_KEY_PREFIX"):
        Guards(Quart(__name__), key_prefix=prefix)


async def test_empty_stores_given_to_guards_are_the_ones_used() -> None:
    """An empty memory store has length 0: it must not be mistaken for "not given"."""
    counters, cache = MemoryCounterStore(), MemoryCacheStore()
    app = Quart(__name__)
    Guards(app, counter_store=counters, cache_store=cache)

    @app.get("/things")
    @rate_limited(limit=5, minutes=1)
    @cached(minutes=5)
    async def things() -> str:
        return "ok"

    async with serving(app) as client:
        await client.get("/things")
    assert len(counters) == 1
    assert len(cache) >= 1
