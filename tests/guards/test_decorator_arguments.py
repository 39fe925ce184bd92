"""Bad arguments fail when the module is imported, with a message naming the value."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from quart import Quart

from quart_api.guards import ConfigurationError, Guards, cached, precheck, protected, rate_limited


def _view() -> str:
    return "ok"


BAD: list[Any] = [
    # (call, exception, text the message must contain)
    (lambda: rate_limited(limit=0), ValueError, "0"),
    (lambda: rate_limited(limit="10"), ConfigurationError, "'10'"),
    (lambda: rate_limited("10/fortnight"), ConfigurationError, "'10/fortnight'"),
    (lambda: rate_limited("10/minute, 0/hour"), ConfigurationError, "'0/hour'"),
    (lambda: rate_limited("10/minute", minutes=5), TypeError, "rate string"),
    (lambda: rate_limited("10/minute", config="API_RATE_LIMIT"), TypeError, "config="),
    (lambda: rate_limited("2/minute", cost=3), ValueError, "cost=3"),
    (lambda: rate_limited(limit=True), TypeError, "True"),
    (lambda: rate_limited(limit=5, minutes=-1), ValueError, "-60"),
    (lambda: rate_limited(limit=5, minutes="1"), TypeError, "'1'"),
    (lambda: rate_limited(limit=5, minutes=1, seconds=5), TypeError, "one of"),
    (lambda: rate_limited(limit=5, per=60), TypeError, "60"),
    (lambda: rate_limited(methods="GET"), TypeError, "'GET'"),
    (lambda: rate_limited(methods=["GOT"]), ValueError, "GOT"),
    (lambda: rate_limited(methods=[]), ValueError, "empty"),
    (lambda: rate_limited(ip=False, user=False), ValueError, "ip=False"),
    (lambda: rate_limited(limit=2, cost=5), ValueError, "cost=5"),
    (lambda: rate_limited(cost=0), ValueError, "0"),
    (lambda: rate_limited(key="ip"), TypeError, "'ip'"),
    (lambda: rate_limited(key=lambda who: who), TypeError, "no arguments"),
    (lambda: rate_limited(exempt_when=1), TypeError, "1"),
    (lambda: rate_limited(scope="a b"), ValueError, "'a b'"),
    (lambda: rate_limited(scope="{x}"), ValueError, "'{x}'"),
    (lambda: rate_limited(scope='a"b'), ValueError, "quotes"),
    (lambda: rate_limited(scope="a\\b"), ValueError, "backslashes"),
    (lambda: protected(scope="a\x00b"), ValueError, "printable ASCII"),
    (lambda: rate_limited(scope="caf\u00e9"), ValueError, "printable ASCII"),
    (lambda: rate_limited(config=""), TypeError, "''"),
    (lambda: protected(config=3), TypeError, "3"),
    (lambda: protected(limit=-1), ValueError, "-1"),
    (lambda: protected(seconds=0), ValueError, "0"),
    (lambda: protected(statuses=404), TypeError, "404"),
    (lambda: protected(statuses=[99]), ValueError, "99"),
    (lambda: protected(statuses=["404"]), ValueError, "404"),
    (lambda: protected(block_status=200), ValueError, "200"),
    (lambda: protected(minutes=60, max_ban=timedelta(minutes=1)), ValueError, "max_ban"),
    (lambda: cached(minutes="5"), TypeError, "'5'"),
    (lambda: cached(seconds=-1), ValueError, "-1"),
    (lambda: cached(stale=-1), ValueError, "-1"),
    (lambda: cached(namespace=""), ValueError, "''"),
    (lambda: cached(headers="X-A"), TypeError, "string"),
    (lambda: cached(headers=["X Note"]), ValueError, "'X Note'"),
    (lambda: cached(headers=["Transfer-Encoding"]), ValueError, "never stored"),
    (lambda: cached(headers=["Set-Cookie"]), ValueError, "never stored"),
    (lambda: precheck("nope"), TypeError, "'nope'"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("call", "error", "text"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_fail_at_decoration_time_naming_the_value(
    call: Callable[[], Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as raised:
        call()
    assert text in str(raised.value)


def test_cached_twice_on_one_view_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        cached(minutes=1)(cached(minutes=2)(_view))


def test_decorators_return_the_view_unchanged() -> None:
    """Markers, not wrappers: the function the route registers is the one written."""

    def view() -> str:
        return "ok"

    assert rate_limited(view) is view
    assert protected(limit=3)(view) is view
    assert cached(view) is view
    assert precheck(lambda: None)(view) is view


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("store_timeout", 0, "STORE_TIMEOUT=0"),
        ("trusted_proxy_count", -1, "TRUSTED_PROXY_COUNT=-1"),
        ("ipv6_prefix", 129, "GUARDS_IPV6_PREFIX=129"),
        ("key_prefix", "a b", "GUARDS_KEY_PREFIX='a b'"),
        ("protect_unrouted", (3,), "GUARDS_PROTECT_UNROUTED=(3,)"),
        ("redis_url", "ftp://example.invalid", "ftp://example.invalid"),
        ("memcached_servers", "no-port-here", "no-port-here"),
    ],
)
def test_bad_settings_fail_at_init_naming_the_value(option: str, value: Any, text: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Guards(Quart(__name__), **{option: value})
    assert text in str(raised.value)


def test_bad_app_config_value_fails_at_init_naming_the_key() -> None:
    app = Quart(__name__)
    app.config["STORE_TIMEOUT"] = "fast"
    with pytest.raises(ConfigurationError, match="STORE_TIMEOUT='fast'"):
        Guards(app)


def test_a_limit_finer_than_a_microsecond_is_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match="more than one per microsecond"):
        rate_limited(limit=2000, seconds=0.001)


def test_a_config_rate_finer_than_a_microsecond_is_refused() -> None:
    from quart_api.guards.rates import rate_from_config

    with pytest.raises(ValueError, match="API_RATE_LIMIT"):
        rate_from_config("API_RATE_LIMIT", "100000000/minute")
    assert rate_from_config("API_RATE_LIMIT", "10000000/minute") == (10_000_000, 60_000)
