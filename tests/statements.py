"""What a database was sent: count SQL round trips in tests, never time them.

SQLAlchemy reports the statements it executes (``before_cursor_execute``); reads
that run straight on asyncpg (``quart_api.models.reads``) and asyncpg's own
transaction control and pings never reach that event, so asyncpg's query logger
is attached too, to every connection opened while counting. (SQLAlchemy's asyncpg
adapter runs its statements as prepared statements, which asyncpg does not log:
nothing is counted twice.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

from quart_api.db import Database

__all__ = ["PING", "Sent", "sent_to"]

#: The pool's pre-ping (``quart_api.db``): a liveness check, not the request's work.
PING = "SELECT 1"
_DATA = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass
class Sent:
    """Statements sent through SQLAlchemy (``cursor``) and by asyncpg itself (``driver``)."""

    cursor: list[str] = field(default_factory=list)
    driver: list[str] = field(default_factory=list)

    def statements(self) -> list[str]:
        """Statements that read or write data, pings left out, in the order sent per source."""
        return [s for s in self.cursor + self.driver if _verb(s) in _DATA and s.strip() != PING]

    def transaction_control(self) -> list[str]:
        """BEGIN, COMMIT, ROLLBACK and savepoints, from either source."""
        return [s for s in self.cursor + self.driver if _verb(s) in _CONTROL]

    def clear(self) -> None:
        self.cursor.clear()
        self.driver.clear()


def _verb(statement: str) -> str:
    words = statement.split(maxsplit=1)
    return words[0].upper().rstrip(";") if words else ""


@contextmanager
def sent_to(database: Database) -> Iterator[Sent]:
    """Record what ``database`` is sent inside the block.

    asyncpg's logger reaches only connections opened inside the block: dispose the
    engine first (``await database.dispose()``), and send one request before
    counting (``sent.clear()``), since a new connection's set-up queries are logged too.
    """
    sent = Sent()

    def on_cursor(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.cursor.append(statement)

    def on_query(record: Any) -> None:
        sent.driver.append(record.query)

    def on_connect(_dbapi_connection: Any, record: Any) -> None:
        driver = record.driver_connection
        if hasattr(driver, "add_query_logger"):  # asyncpg; sqlite3 has no such hook
            driver.add_query_logger(on_query)

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_cursor)
    event.listen(engine.pool, "connect", on_connect)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_cursor)
        event.remove(engine.pool, "connect", on_connect)
