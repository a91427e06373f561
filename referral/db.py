"""Database engine and sessions.

One request, one transaction: the session dependency opens a transaction, the handler and
its services only flush, and the dependency commits once before the response is sent (or
rolls back when anything raised). Facts that must survive a failed request (a failed login,
a denied attempt) go through `independent_session()`, in a transaction of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import LRUCache
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.audit.chain import stage_pending
from referral.config import Settings
from referral.errors import ServiceUnavailable


class StatementCache:
    """The engine's cache of compiled statements (SQLAlchemy's `compiled_cache` option), found
    first by the identity of a statement's cache key.

    SQLAlchemy keys its cache by the statement's structure, a nested tuple that Python hashes
    anew on every execution. For the case read's statement (the access rule, the records,
    the re-referrals) that tuple has about 5,000 elements and took 136 µs of the worker's
    CPU per read; the five statements of a read, 185 µs (ADR 0020). The statements that run
    on every request are built once and kept (`AccessPolicy.prepared`, module constants),
    and SQLAlchemy memoizes each one's key, so here the key's identity finds the compiled
    form in one dictionary lookup. Any other statement, and the first execution of each,
    takes SQLAlchemy's own cache, as before. An entry keeps its key alive, so an identity
    is never taken for another key's."""

    _IDENTITIES_AT_MOST = 2_000

    def __init__(self, size: int = 500) -> None:
        self._compiled: LRUCache[Any, Any] = LRUCache(size)
        self._by_identity: dict[int, tuple[Any, tuple[Any, ...], Any]] = {}

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        # key: (dialect, the statement's structure, column keys, schema translation, many)
        structure, rest = key[1], key[:1] + key[2:]
        found = self._by_identity.get(id(structure))
        if found is not None and found[0] is structure and found[1] == rest:
            return found[2]
        compiled = self._compiled.get(key)
        if compiled is None:
            return default
        self._remember(structure, rest, compiled)
        return compiled

    def __setitem__(self, key: tuple[Any, ...], compiled: Any) -> None:
        self._compiled[key] = compiled
        self._remember(key[1], key[:1] + key[2:], compiled)

    def _remember(self, structure: Any, rest: tuple[Any, ...], compiled: Any) -> None:
        if len(self._by_identity) >= self._IDENTITIES_AT_MOST:
            self._by_identity.clear()  # statements built per request; the kept ones return
        self._by_identity[id(structure)] = (structure, rest, compiled)


def create_engine(settings: Settings, *, batch: bool = False) -> AsyncEngine:
    """The app's engine; with `batch`, a command's (the CLI's), whose statements have no
    deadline: an operator runs it and watches its progress, and at national scale a single
    statement of a snapshot or a retention run can outlast a deadline meant for requests."""
    options = {"compiled_cache": StatementCache()}
    # JSON read from the database is parsed by orjson: the same values as json.loads, in a
    # fraction of the time (a case read parses its records as JSON). What is written stays
    # json.dumps's text, which the audit chain's rendering on PostgreSQL expects.
    parse_json = orjson.loads
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.database_url,
            connect_args={"timeout": 30},
            pool_pre_ping=False,
            execution_options=options,
            json_deserializer=parse_json,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        settings.database_url,
        execution_options=options,
        json_deserializer=parse_json,
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_timeout=settings.database_pool_timeout_seconds,
        # No ping before each checkout (a round trip per request): a connection that a
        # database restart broke fails its request with 503 (main.py), and SQLAlchemy then
        # invalidates the pool, so the next requests reconnect.
        pool_pre_ping=False,
        pool_recycle=1800,
        # A database that does not answer a connection attempt, or a statement, is
        # "unavailable" (503) in bounded time (config.py), not after asyncpg's default minute
        # or TCP's retransmission timeout.
        connect_args={
            "timeout": settings.database_connect_timeout_seconds,
            "command_timeout": None if batch else settings.database_statement_timeout_seconds,
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessionmaker


_REQUEST_SESSION = "referral.session"


@asynccontextmanager
async def request_transaction(request: Request) -> AsyncIterator[None]:
    """The request's one transaction, around its route's handler (routing.ProblemRoute):
    open before the dependencies run, committed once the handler has built its response and
    before that response is sent; rolled back when anything raised.

    A context manager in the route, not a dependency with `yield`: FastAPI runs such a
    dependency through two exit stacks and a shielded cancel scope, 3 % of the instructions
    of an audited read (ADR 0018)."""
    async with _sessionmaker(request)() as session, session.begin():
        request.scope[_REQUEST_SESSION] = session
        try:
            yield
            # Fail closed: the audit events commit with the change, or nothing commits.
            staged = await stage_pending(session, request.app.state.audit_keys)
        finally:
            del request.scope[_REQUEST_SESSION]
    if staged:  # answered once the events are in the chain (ADR 0014)
        await request.app.state.sealer.sealed()


async def request_session(request: Request) -> AsyncSession:
    try:
        return request.scope[_REQUEST_SESSION]
    except KeyError:
        raise RuntimeError(
            "SessionDep is for routes of class routing.ProblemRoute, which open the "
            "request's transaction"
        ) from None


# SQLSTATE class 08 is "connection exception" (asyncpg's lost connection is 08003);
# 57P01-57P03 are a server shutting down, crashed, or still starting up.
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03")
# Class 53 is "insufficient resources": out of connections (53300: several workers' pools
# can add up to more than max_connections, or a role's limit), disk, memory.
_BUSY_STATES = ("53",)


def _chain_of(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = getattr(seen, "orig", None) or seen.__cause__


def _has_state(exc: BaseException, states: tuple[str, ...]) -> bool:
    return any(
        str(getattr(seen, "sqlstate", "") or "").startswith(states) for seen in _chain_of(exc)
    )


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database cannot serve us now", not a fault of ours."""
    for seen in _chain_of(exc):
        if isinstance(seen, PoolTimeout | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
    return _has_state(exc, _UNREACHABLE_STATES + _BUSY_STATES)


def unavailable_error(exc: BaseException) -> ServiceUnavailable:
    busy = isinstance(exc, PoolTimeout) or _has_state(exc, _BUSY_STATES)
    detail = "The database is busy" if busy else "The database is not reachable"
    return ServiceUnavailable(f"{detail}; try again shortly.", headers={"Retry-After": "2"})


# The commit happens before the response is sent, so a failed commit is an error response
# and never a silent loss behind a 200.
SessionDep = Annotated[AsyncSession, Depends(request_session)]


@asynccontextmanager
async def independent_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A separate, immediately committed transaction (outcome survives the request's rollback)."""
    async with _sessionmaker(request)() as session, session.begin():
        yield session
