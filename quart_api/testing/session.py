"""Servers kept for a whole test session, and brought back after a test stopped them.

`serve_for_session` is what each session fixture of `quart_api.testing.fixtures`
yields from; use it for your own::

    @pytest.fixture(scope="session")
    def second_memcached() -> Iterator[MemcachedServer]:
        yield from serve_for_session(MemcachedServer())

No pytest import here, so a conftest may import it before the plugin loads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

__all__ = ["SessionServer", "heal_session_servers", "serve_for_session"]


class SessionServer(Protocol):
    """What a session server does (`Server`, `RedisClusterServer`, `RedisSentinelGroup`)."""

    def start(self) -> object: ...
    def ensure_running(self) -> None: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=SessionServer)

# Servers the session has started, in start order; healed before every test.
_session_servers: list[SessionServer] = []


def serve_for_session(server: S) -> Iterator[S]:
    """Start ``server``, yield it, and close it when the generator closes.

    While it is yielded, `heal_session_servers` brings it back if a test left it
    paused or stopped.
    """
    try:
        server.start()
        _session_servers.append(server)
        yield server
    finally:
        if server in _session_servers:
            _session_servers.remove(server)
        server.close()


def heal_session_servers() -> None:
    """Resume or restart every session server that a test left paused or stopped."""
    for server in _session_servers:
        server.ensure_running()
