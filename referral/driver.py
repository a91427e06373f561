"""A statement sent by a pooled connection's asyncpg driver itself (ADR 0037).

SQLAlchemy's statement machinery (greenlet, cursor, result) cost about 0.1 ms of CPU a
statement on top of the driver's own work, for statements whose SQL is already the
driver's. The sealer's rounds in autocommit send theirs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import asyncpg


def in_autocommit(connection: Any) -> bool:
    """Whether `connection` (an SQLAlchemy AsyncConnection) was set to autocommit. Only then
    may a statement go to its driver directly: otherwise SQLAlchemy opens its transaction
    on its own first statement, which this would not be."""
    options = connection.sync_connection.get_execution_options()
    return options.get("isolation_level") == "AUTOCOMMIT"


async def on_driver(connection: Any, method: str, sql: str, arguments: Sequence[Any]) -> Any:
    """`sql` run by the asyncpg connection under `connection`, by its `method` ("fetchval",
    "fetchrow", ...). If it fails, the connection is invalidated, as SQLAlchemy would have
    done on a lost connection (it sees only its own statements fail), so the pool does not
    hand it out again; a lost connection is raised as ConnectionError, which
    `db.database_unavailable` reads as the database being unavailable (503). Listeners of
    SQLAlchemy's `before_cursor_execute` see the statement as they see its own."""
    sync = connection.sync_connection
    _announce(sync, sql, arguments)
    # a connection in use holds its driver's: no greenlet to reach it (ADR 0038)
    raw = sync.connection if not sync.invalidated else await connection.get_raw_connection()
    try:
        return await getattr(raw.driver_connection, method)(sql, *arguments)
    except Exception as exc:
        await connection.invalidate(exc)
        if isinstance(exc, asyncpg.InterfaceError):
            raise ConnectionError("the database connection was lost") from exc
        raise


def _announce(connection: Any, sql: str, arguments: Sequence[Any]) -> None:
    """Tell `before_cursor_execute`'s listeners (the tests' statement counts, the bench's
    capture), with the connection's execution options where they look for them."""
    if connection.dispatch.before_cursor_execute:
        context = SimpleNamespace(execution_options=connection.get_execution_options())
        connection.dispatch.before_cursor_execute(
            connection, None, sql, tuple(arguments), context, False
        )
