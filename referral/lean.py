"""What the lean answers share (ADR 0028, 0029): the remembered actor's access, one
statement sent on a pooled connection's asyncpg driver in autocommit, and the sealer that
writes their audit events into the chain (ADR 0031).

A lean answer answers a request before its route's dependencies run, when it can answer it
exactly as the route would; otherwise it returns None, having changed nothing, and the route
answers. Nothing here decides access: the statement checks in the database, as it runs, that
the remembered actor still holds (`auth.dependencies.still_the_actor`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import asyncpg
from fastapi import Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from referral.audit.sealer import Sealer
from referral.auth.dependencies import KnownActors
from referral.auth.tokens import InvalidToken, VerifiedTokens
from referral.authz.dependencies import Access, access_of
from referral.authz.policy import AccessPolicy
from referral.db import database_unavailable, unavailable_error
from referral.driver import in_autocommit, on_driver
from referral.models.base import utcnow
from referral.routing import is_json, media_type_of

_SCHEME = "bearer "
BodyT = TypeVar("BodyT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as the driver takes it: its SQL, and for each of its positional parameters
    the name of the value to bind (None for a value the statement itself holds), that value,
    and the type's conversion for the driver, if any."""

    sql: str
    slots: tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...]

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        arguments = []
        for name, held, process in self.slots:
            value = held if name is None else values[name]
            arguments.append(value if process is None else process(value))
        return arguments


def compile_for_driver(statement: Any, dialect: Any) -> Compiled:
    compiled = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in compiled.string:  # an expanding IN would need its values to render
        raise ValueError("a lean statement must render without its parameters' values")
    slots = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        given = bind.required or bind.value is None
        slots.append((bind.key if given else None, None if given else bind.value, process))
    return Compiled(compiled.string, tuple(slots))


async def _returns_a_row(connection: Any, compiled: Compiled, values: dict[str, Any]) -> bool:
    """Whether `compiled` returned a row, run on the round's connection (the sealer's): by
    its driver in a round in autocommit (ADR 0037), else through SQLAlchemy, which opens
    the round's transaction."""
    arguments = compiled.arguments(values)
    if in_autocommit(connection):
        return await on_driver(connection, "fetchrow", compiled.sql, arguments) is not None
    result = await connection.exec_driver_sql(compiled.sql, tuple(arguments))
    return result.first() is not None


async def json_body(request: Request, model: type[BodyT]) -> BodyT | None:
    """The request's JSON body as `model`, if the full path would take it as it is: sent as
    JSON and valid. None otherwise: the full path's 415 or 422 is then the answer."""
    media_type = media_type_of(request)
    if media_type is None or not is_json(media_type):
        return None
    try:
        return model.model_validate(json.loads(await request.body()))
    except ValueError:  # JSON that does not parse, or a pydantic ValidationError
        return None


@dataclass(frozen=True, slots=True)
class StillHolds:
    """A lean statement that returns a row while a check holds, as the condition of
    `Sealer.chained`: the round that would write the event runs it first, in its own
    transaction. `values` leave out "now", bound when the round runs, so that the same check
    asked by many requests is one statement per round (ADR 0031)."""

    compiled: Compiled
    values: frozenset[tuple[str, Any]]

    @classmethod
    def of(cls, compiled: Compiled, values: dict[str, Any]) -> StillHolds:
        return cls(compiled, frozenset((k, v) for k, v in values.items() if k != "now"))

    async def holds(self, connection: Any) -> bool:
        values = dict(self.values) | {"now": utcnow()}
        return await _returns_a_row(connection, self.compiled, values)


@dataclass(frozen=True, slots=True, eq=False)
class Change:
    """A lean statement that makes a change, as the condition of `Sealer.chained`: the round
    runs it in its own transaction and writes the event only if it returned a row (the id
    `returns`), so the change and the event that records it commit together, or neither
    does (ADR 0032). Each change is a condition of its own (equal only to itself); changes
    of one statement are run together (`batch`, `all_hold`)."""

    compiled: Compiled = field(repr=False)
    values: dict[str, Any] = field(repr=False)  # a person's data: never in a log
    returns: Any = field(repr=False)
    changes: ClassVar[bool] = True

    @property
    def batch(self) -> str:
        return self.compiled.sql

    async def holds(self, connection: Any) -> bool:
        return await _returns_a_row(connection, self.compiled, self.values)

    @staticmethod
    async def all_hold(connection: Any, changes: list[Change]) -> list[bool]:
        """`holds` of each of `changes` (of one statement), in order, in two round trips: the
        first through SQLAlchemy, which opens the round's transaction if nothing has yet,
        then the others pipelined on the driver, in that transaction."""
        first, others = changes[0], changes[1:]
        answers = [await first.holds(connection)]
        driver = (await connection.get_raw_connection()).driver_connection
        if not driver.is_in_transaction():  # never outside the round's transaction
            raise RuntimeError("the round's transaction is not open")
        arguments = [change.compiled.arguments(change.values) for change in others]
        rows = await on_driver(connection, "fetchmany", first.compiled.sql, [arguments])
        returned = {row[0] for row in rows}
        return answers + [change.returns in returned for change in others]


class RememberedActors:
    """The access of an actor this worker has already authenticated, from the request's
    bearer token alone; None for anything else (the route then decides, and audits)."""

    def __init__(
        self, policy: AccessPolicy, verified_tokens: VerifiedTokens, known_actors: KnownActors
    ) -> None:
        self._policy = policy
        self._verified_tokens = verified_tokens
        self._known_actors = known_actors

    def access(self, request: Request, resource: str, action: str) -> Access | None:
        header = request.headers.get("authorization", "")
        if header[: len(_SCHEME)].lower() != _SCHEME:
            return None
        try:
            claims = self._verified_tokens.decode(header[len(_SCHEME) :])
        except InvalidToken:
            return None
        actor = self._known_actors.of(claims)
        if actor is None:
            return None
        return access_of(self._policy, actor, resource, action)


class LeanStatements:
    """Sends one compiled statement on a pooled connection's driver, in autocommit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Called with each statement sent and its arguments (tests count statements, the
        # bench captures the read's SQL for pgbench).
        self.observers: list[Callable[[str, list[Any]], None]] = []

    def compile(self, statement: Any) -> Compiled:
        return compile_for_driver(statement, self.engine.dialect)

    async def fetchrow(self, compiled: Compiled, values: dict[str, Any]) -> Any:
        """The statement's first row, or None. A database that cannot serve is 503."""
        return await self._run("fetchrow", compiled, values)

    async def fetch(self, compiled: Compiled, values: dict[str, Any]) -> list[Any]:
        """The statement's rows. A database that cannot serve is 503."""
        return await self._run("fetch", compiled, values)

    async def _run(self, method: str, compiled: Compiled, values: dict[str, Any]) -> Any:
        arguments = compiled.arguments(values)
        for observe in self.observers:
            observe(compiled.sql, arguments)
        return await greenlet_spawn(self._on_a_pooled_connection, method, compiled.sql, arguments)

    def _on_a_pooled_connection(self, method: str, sql: str, arguments: list[Any]) -> Any:
        """`sql` sent by the driver of a connection checked out for it alone, which goes back
        to the pool at once. Checkout, statement and return run in the one greenlet this is
        called in (ADR 0038): `engine.connect()`, `get_raw_connection()` and `close()` would
        each start one, and in Python 3.11 every greenlet begins a fresh frame stack (a
        16 KiB mmap, a page fault and a munmap): the three came to about 8 % of a read's CPU."""
        with self.engine.sync_engine.connect() as connection:
            driver = connection.connection.driver_connection
            try:
                return await_only(getattr(driver, method)(sql, *arguments))
            except Exception as exc:
                if isinstance(exc, asyncpg.InterfaceError) or database_unavailable(exc):
                    connection.invalidate(exc)
                    raise unavailable_error(exc) from exc
                raise


class LeanAnswer:
    """What a lean answer holds: where it sends its statements, whose access it may answer
    for, and the sealer its audit events go to. Its event is not staged: `Sealer.chained`
    writes it into the chain, with the answer's change if it makes one (a `Change`, ADR
    0032), and the answer is sent only once that has committed (ADR 0031)."""

    def __init__(
        self, statements: LeanStatements, remembered: RememberedActors, sealer: Sealer
    ) -> None:
        self._statements = statements
        self._remembered = remembered
        self._sealer = sealer
