"""The guards' one reach into werkzeug's ``Headers``: still there, still behaving."""

from __future__ import annotations

from werkzeug.datastructures import Headers

from quart_api.guards._werkzeug_headers import ServedHeaders, append_checked


def test_werkzeug_still_keeps_header_pairs_in_its_list() -> None:
    """``Headers._list`` is what ``append_checked`` and ``ServedHeaders`` write to."""
    headers = Headers([("Content-Type", "application/json")])
    assert headers._list == [("Content-Type", "application/json")]
    append_checked(headers, [("RateLimit", '"ip";r=9;t=1'), ("X-Cache", "hit")])
    assert headers["ratelimit"] == '"ip";r=9;t=1'
    assert headers.getlist("X-Cache") == ["hit"]
    assert list(headers.items()) == [
        ("Content-Type", "application/json"),
        ("RateLimit", '"ip";r=9;t=1'),
        ("X-Cache", "hit"),
    ]


def test_served_headers_read_and_change_like_werkzeugs() -> None:
    pairs = [("ETag", '"e"'), ("Content-Length", "4")]
    headers = ServedHeaders.of_checked(pairs)
    assert headers == ServedHeaders(pairs)
    assert headers == Headers(pairs)
    assert Headers(pairs) == headers
    assert headers != Headers(pairs[:1])
    assert headers != pairs
    assert next(headers.items()) == ("ETag", '"e"')
    items = headers.items()
    headers["X-Cache"] = "hit"  # later changes go through werkzeug's checks as usual
    assert list(items) == pairs  # items() walks the pairs as they were when it was called
    assert list(headers.keys()) == ["ETag", "Content-Length", "X-Cache"]
    assert list(headers.items(lower=True))[-1] == ("x-cache", "hit")
    assert isinstance(headers.copy(), ServedHeaders)
    for name, _ in headers.items():  # a hook removing while it walks misses none
        headers.remove(name)
    assert list(headers.items()) == []
    pairs.append(("Vary", "Cookie"))
    assert "Vary" not in headers  # of_checked copied its pairs
