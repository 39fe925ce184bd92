"""SQLAlchemy's asyncpg dialect: replacing its ping, close and terminate.

Checked on SQLAlchemy 2.0.30 to 2.1.9 (``pyproject.toml``: ``>=2.0.30,<2.2``) with
asyncpg 0.29 to 0.32. The internals used, each with a test in
``tests/adapters/test_sqlalchemy_asyncpg.py`` named after it:

- ``dialect.do_terminate(dbapi_connection)``, ``dialect.do_close(dbapi_connection)`` and
  ``dialect.do_ping(dbapi_connection)``: the dialect methods the pool calls to drop an
  invalidated connection, to close one it keeps no more (an overflow connection given
  back, ``dispose()``) and to pre-ping one at checkout; replaced on the engine's own
  dialect instance.
- ``AsyncAdapt_asyncpg_connection._connection``: the asyncpg connection under
  SQLAlchemy's DBAPI adapter; ``._transaction``: the adapter's open transaction, or
  None; ``._handle_exception(error)``: raises ``error`` as the DBAPI error the pool
  understands (so a failed ping invalidates the connection).
- ``sqlalchemy.util.await_only``: runs a coroutine from the dialect's sync code, in
  the greenlet SQLAlchemy's asyncio layer provides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

__all__ = [
    "asyncpg_connection",
    "in_transaction",
    "replace_close",
    "replace_ping",
    "replace_terminate",
]

#: ``ping(connection, in_transaction)``: checks an asyncpg connection; raises if it fails.
Ping = Callable[[Any, bool], Awaitable[None]]


def asyncpg_connection(dbapi_connection: Any) -> Any:
    """The asyncpg connection under SQLAlchemy's DBAPI adapter."""
    return dbapi_connection._connection


def in_transaction(dbapi_connection: Any) -> bool:
    """True while SQLAlchemy's adapter has a transaction open on the connection."""
    return dbapi_connection._transaction is not None


def replace_terminate(engine: AsyncEngine, terminate: Callable[[Any], None]) -> None:
    """Drop invalidated connections with ``terminate(asyncpg_connection)``."""

    def do_terminate(dbapi_connection: Any) -> None:
        terminate(asyncpg_connection(dbapi_connection))

    engine.sync_engine.dialect.do_terminate = do_terminate  # type: ignore[method-assign]


def replace_close(engine: AsyncEngine, close: Callable[[Any], None]) -> None:
    """Close connections the pool keeps no more with ``close(asyncpg_connection)``."""

    def do_close(dbapi_connection: Any) -> None:
        close(asyncpg_connection(dbapi_connection))

    engine.sync_engine.dialect.do_close = do_close  # type: ignore[method-assign]


def replace_ping(
    engine: AsyncEngine, ping: Ping, skip: Callable[[Any], bool] | None = None
) -> None:
    """Pre-ping pooled connections with ``ping(asyncpg_connection, in_transaction)``.

    A driver error from ``ping`` (cancellation included) reaches the pool as the DBAPI
    error SQLAlchemy's own ping would raise, so the pool invalidates the connection.
    ``skip(asyncpg_connection)`` true hands the connection out unpinged, without the
    hop through the event loop that awaiting a ping costs.
    """

    def do_ping(dbapi_connection: Any) -> bool:
        connection = asyncpg_connection(dbapi_connection)
        if skip is not None and skip(connection):
            return True
        try:
            await_only(ping(connection, in_transaction(dbapi_connection)))
        except Exception as error:  # noqa: BLE001 - translated, as SQLAlchemy's own ping does
            dbapi_connection._handle_exception(error)
        return True

    engine.sync_engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
