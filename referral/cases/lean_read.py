"""The audited case read in one statement on the driver, on PostgreSQL (ADR 0028).

A case read by an actor this worker has already authenticated (`KnownActors`) is answered
here, before the route's dependencies run: one statement, sent on the pooled connection's
asyncpg driver in autocommit, that

- checks in the database, as it runs, that the token's session is in force and the account
  is still the one remembered (`auth.dependencies.still_the_actor`),
- reads the case under the access rule with every record of it the actor may read, built by
  the same code as the full path's statement (`repository.case_row_statement`), and
- stages the read's audit event, MAC'd beforehand, only where both hold and the case is in
  the actor's own scope (`audit.chain.stage_where`).

The answer is then built by the same view code and sent once the event is chained, as the
full path does. Whatever this path cannot answer exactly as the full path would, it leaves to
the full path, having changed nothing: no bearer token, a token not verified before, an
actor not remembered or changed since, a referrer's view, a case missing or out of scope or
reached by break-glass, a blind index moving to a new key, SQLite. Denials are therefore
decided, answered and audited in one place only, the full path.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import Request, Response
from sqlalchemy import and_, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from referral import audit
from referral.audit.chain import STAGED_PARAM_PREFIX, AuditKeys, stage_where, staged_row
from referral.auth.dependencies import KnownActors, actor_params, still_the_actor
from referral.auth.tokens import InvalidToken, VerifiedTokens
from referral.authz.dependencies import Access, access_of
from referral.authz.policy import AccessPolicy
from referral.cases import repository, views
from referral.cases.service import CaseKeys
from referral.db import database_unavailable, unavailable_error

_SCHEME = "bearer "


@dataclass(frozen=True, slots=True)
class _Compiled:
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


def _compile(statement: Any, dialect: Any) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in compiled.string:  # an expanding IN would need its values to render
        raise ValueError("a lean statement must render without its parameters' values")
    slots = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        given = bind.required or bind.value is None
        slots.append((bind.key if given else None, None if given else bind.value, process))
    return _Compiled(compiled.string, tuple(slots))


def _statement(access: Access, dialect: Any, rereferrals: bool) -> Any:
    """The read, the actor's check and the staging of the event, as one statement. The case
    comes back only if its event was staged: the actor still holds and the case is in own
    scope. Otherwise no row, and nothing written."""
    found = repository.case_row_statement(
        access, dialect.name, facts=False, parts=True, rereferrals=rereferrals
    ).cte("found")
    actor_holds = still_the_actor(national=access.actor.municipality_id is None)
    staged = stage_where(and_(found.c.in_own_scope, actor_holds), found).cte("staged")
    return select(found).where(exists(select(staged.c.id)))


class LeanCaseRead:
    """`answer(request)`: the case read's response, or None for the full path to give."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: AccessPolicy,
        keys: CaseKeys,
        audit_keys: AuditKeys,
        verified_tokens: VerifiedTokens,
        known_actors: KnownActors,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._keys = keys
        self._audit_keys = audit_keys
        self._verified_tokens = verified_tokens
        self._known_actors = known_actors
        # Called with each statement sent and its arguments (tests count statements, the
        # bench captures the read's SQL for pgbench).
        self.observers: list[Callable[[str, list[Any]], None]] = []

    async def answer(self, request: Request) -> Response | None:
        access = self._access(request)
        if access is None:
            return None
        try:
            case_id = uuid.UUID(request.path_params["case_id"])
        except (KeyError, ValueError):
            return None  # the full path answers 422
        rereferrals = access.grant.view == "coordinator"
        event = audit.build_event(
            request,
            action="case.read",
            resource_type="case",
            resource_ids=[case_id],
            fields=views.detail_fields(rereferrals),
            actor=access.actor,
        )
        staged = {
            f"{STAGED_PARAM_PREFIX}{k}": v for k, v in staged_row(self._audit_keys, event).items()
        }
        values = {
            "case_id": case_id,
            **access.scope_params(),
            **actor_params(access.actor),
            **staged,
        }
        sections = access.readable_sections
        compiled = access.prepared(
            "lean_case_read",
            lambda: _compile(
                _statement(access, self._engine.dialect, rereferrals), self._engine.dialect
            ),
            sections,
            rereferrals,
        )
        row = await self._fetch(compiled, values)
        if row is None:
            return None  # changed account, no such case, out of scope, or break-glass
        request.state.actor = access.actor
        case, _, parts = repository.case_of_row(row, False, True, rereferrals)
        view = views.detail_view(self._keys.ring, self._keys.workflow, case, parts, sections)
        response = views.case_response(view, case.version)
        await request.app.state.sealer.sealed()  # answered once its event is chained
        return response

    def _access(self, request: Request) -> Access | None:
        """The remembered actor's access to read cases, if this path may answer for them."""
        if self._keys.previous_blind_key is not None:
            return None  # re-referrals are looked up under both keys: the full path's work
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
        access = access_of(self._policy, actor, "case", "read")
        if access is None or access.grant.view == "referrer":
            return None  # the full path's 403, or the referrer's view of the case alone
        return access

    async def _fetch(self, compiled: _Compiled, values: dict[str, Any]) -> Any:
        arguments = compiled.arguments(values)
        for observe in self.observers:
            observe(compiled.sql, arguments)
        async with self._engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            try:
                return await driver.fetchrow(compiled.sql, *arguments)
            except Exception as exc:
                lost = isinstance(exc, asyncpg.InterfaceError) or database_unavailable(exc)
                if lost:
                    await connection.invalidate(exc)
                    raise unavailable_error(exc) from exc
                raise


async def answer(request: Request) -> Response | None:
    """The read route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanCaseRead | None = request.app.state.lean_case_read
    return None if lean is None else await lean.answer(request)
