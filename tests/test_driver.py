"""Statements sent by a pooled connection's driver itself (ADR 0037, 0038): seen by
SQLAlchemy's listeners as its own are, and a connection they find lost is invalidated and
reported as the database being unavailable, never handed out again. A lean answer's
statement checks out, runs and returns its connection in one greenlet."""

from __future__ import annotations

import asyncpg
import greenlet
import pytest
from sqlalchemy import event, literal, select

from referral.db import create_engine, database_unavailable
from referral.driver import in_autocommit, on_driver
from referral.errors import ServiceUnavailable
from referral.lean import LeanStatements

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


class _Started:
    """The greenlets started while it is entered (SQLAlchemy starts one per synchronous
    step it runs under asyncio, ADR 0038)."""

    def __enter__(self) -> list:
        self.started: list = []
        self._before = greenlet.settrace(self._trace)
        return self.started

    def _trace(self, what, switch) -> None:
        _origin, target = switch
        started = what == "switch" and target.parent is not None
        if started and not any(target is each for each in self.started):
            self.started.append(target)
        if self._before is not None:
            self._before(what, switch)

    def __exit__(self, *_exc) -> None:
        greenlet.settrace(self._before)


async def test_a_lean_statement_is_one_greenlet_and_gives_its_connection_back(settings):
    engine = create_engine(settings)  # no app: nothing else runs on its loop meanwhile
    try:
        statements = LeanStatements(engine)
        compiled = statements.compile(select(literal(41) + 1))
        await statements.fetchrow(compiled, {})  # the pool has its connection
        with _Started() as started:
            row = await statements.fetchrow(compiled, {})
        assert row[0] == 42
        assert len(started) == 1
        assert engine.sync_engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


async def test_a_lean_statement_on_a_lost_connection_is_503_and_the_next_reconnects(settings):
    engine = create_engine(settings.model_copy(update={"database_pool_size": 1}))
    try:
        statements = LeanStatements(engine)
        compiled = statements.compile(select(literal(1)))
        async with engine.connect() as connection:  # the pool's one connection, dropped
            (await connection.get_raw_connection()).driver_connection.terminate()
        with pytest.raises(ServiceUnavailable):
            await statements.fetchrow(compiled, {})
        assert engine.sync_engine.pool.checkedout() == 0
        assert (await statements.fetchrow(compiled, {}))[0] == 1
    finally:
        await engine.dispose()
