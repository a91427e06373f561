"""Statements sent by a pooled connection's driver itself (ADR 0037): seen by SQLAlchemy's
listeners as its own are, and a connection they find lost is invalidated and reported as
the database being unavailable, never handed out again."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import event

from referral.db import database_unavailable
from referral.driver import in_autocommit, on_driver

pytestmark = pytest.mark.postgres_only


async def test_only_a_connection_in_autocommit_is_in_autocommit(app):
    async with app.state.engine.connect() as connection:
        assert not in_autocommit(connection)
        assert in_autocommit(await connection.execution_options(isolation_level="AUTOCOMMIT"))


async def test_listeners_see_a_driver_statement_with_the_connection_s_options(app):
    seen = []

    def record(_conn, _cursor, statement, parameters, context, _many) -> None:
        seen.append((statement, parameters, context.execution_options.get("probe")))

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with app.state.engine.connect() as connection:
            connection = await connection.execution_options(
                isolation_level="AUTOCOMMIT", probe="yes"
            )
            assert await on_driver(connection, "fetchval", "SELECT $1::int + 1", [41]) == 42
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen == [("SELECT $1::int + 1", (41,), "yes")]


async def test_a_lost_connection_is_unavailable_and_not_handed_out_again(app):
    engine = app.state.engine
    async with engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        driver = (await connection.get_raw_connection()).driver_connection
        driver.terminate()  # the server, or the network, dropped it
        with pytest.raises(ConnectionError) as lost:
            await on_driver(connection, "fetchval", "SELECT 1", [])
        assert database_unavailable(lost.value)
        assert connection.invalidated
    async with engine.connect() as connection:  # a new connection, not the dead one
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        assert await on_driver(connection, "fetchval", "SELECT 1", []) == 1


async def test_a_failed_statement_is_raised_as_it_is_and_its_connection_replaced(app):
    async with app.state.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(asyncpg.UndefinedTableError):
            await on_driver(connection, "fetchval", "SELECT * FROM no_such_table", [])
        assert connection.invalidated
