"""Passwords in store URLs: read the same way in every scheme, never shown.

A password written percent-encoded (the only way to put ``/``, ``?`` or ``#`` in a URL)
must authenticate on ``redis+sentinel://`` and ``redis+cluster://`` exactly as it does
on ``redis://`` (where redis-py decodes it); one that the store cannot use would leave
every guard failing open. And no part of a password may reach a log line or an error.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

from quart_api.guards.errors import ConfigurationError
from quart_api.guards.stores import counter_store_from_url
from quart_api.guards.stores.redis import split_url
from quart_api.testing import RedisSentinelGroup, free_port
from tests.guards.conftest import serving
from tests.guards.stores.conftest import limited_app

#: Every character that needs percent-encoding in a URL's userinfo.
PASSWORD = "p@ss:w/rd?#%25&"
LOOPBACK = "127.0.0.1"


@pytest.mark.slow
async def test_a_percent_encoded_sentinel_password_authenticates_and_limits() -> None:
    with RedisSentinelGroup() as group:
        for server in group.redis:
            with server.client() as client:
                client.config_set("masterauth", PASSWORD)
                client.config_set("requirepass", PASSWORD)
        hosts = group.url.partition("://")[2]
        url = f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}"
        async with serving(limited_app(url)) as client:
            statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], "a password the store cannot use fails open"


@pytest.mark.parametrize("scheme", ["redis+sentinel", "redis+cluster"])
def test_the_userinfo_of_a_multi_host_url_is_percent_decoded_like_redis_py_does(
    scheme: str,
) -> None:
    url = f"{scheme}://{quote('us:er', safe='')}:{quote(PASSWORD, safe='')}@h1:1,h2:2/m"
    assert split_url(url)[3] == {"username": "us:er", "password": PASSWORD}


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2/SECRET@127.0.0.1:6379/0",
        "redis+sentinel://user:hunter2/SECRET@127.0.0.1:26379/master",
        "redis+cluster://:hunter2/SECRET@127.0.0.1:7000",
        "redis+sentinel://:hunter2?SECRET@127.0.0.1:26379/master",
        "redis+cluster://:hunter2#SECRET@127.0.0.1:7000",
    ],
)
def test_no_part_of_an_unencoded_password_shows_in_the_start_up_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as caught:
        counter_store_from_url(url)
    assert "SECRET" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:hunter2@SECRET@{host}/master",
        "redis://:hunter2@SECRET@{host}/0",
        "redis://{host}/0?password=SECRET",
    ],
)
async def test_no_part_of_a_password_shows_in_the_warning_of_a_silent_store(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "quart_api.guards")
    dead = f"{LOOPBACK}:{free_port()}"  # nothing listens there
    async with serving(limited_app(url.format(host=dead))) as client:
        await client.get("/things")
    warned = [r.getMessage() for r in caplog.records if "do not answer" in r.getMessage()]
    assert len(warned) == 1
    assert dead in warned[0], "the warning names the store"
    assert "SECRET" not in caplog.text
    assert "hunter2" not in caplog.text
