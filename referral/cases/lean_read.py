"""The audited case read in one statement on the driver, on PostgreSQL (ADR 0028).

A case read by an actor this worker has already authenticated (`KnownActors`) is answered
here, before the route's dependencies run: one statement, sent on the pooled connection's
asyncpg driver in autocommit, that

- reads the case under the access rule with every record of it the actor may read, built by
  the same code as the full path's statement (`repository.case_row_statement`),
- only where the case is in the actor's own scope, and the token's session is in force and
  the account is still the one remembered, checked in the database as it runs
  (`auth.dependencies.still_the_actor`).

The answer is then built by the same view code, and sent only once the sealer has written
the read's audit event into the chain (`Sealer.chained`, ADR 0031).

Whatever this path cannot answer exactly as the full path would, it leaves to the full path,
having changed nothing: no bearer token, a token not verified before, an actor not
remembered or changed since, a referrer's view, a case missing or out of scope or reached by
break-glass, a blind index moving to a new key, SQLite. Denials are therefore decided,
answered and audited in one place only, the full path.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request, Response
from sqlalchemy import select

from referral import audit
from referral.auth.dependencies import actor_params, still_the_actor
from referral.authz.dependencies import Access
from referral.cases import repository, views
from referral.cases.lean_case import LeanCaseAnswer


def case_statement(access: Access, dialect: Any, rereferrals: bool, facts: bool = False) -> Any:
    """The read and the actor's check, as one statement: the case (with the lifecycle's
    facts, if asked) comes back only while the actor still holds and the case is in their
    own scope; otherwise no row."""
    found = repository.case_row_statement(
        access, dialect.name, facts=facts, parts=True, rereferrals=rereferrals
    ).cte("found")
    return select(found).where(found.c.in_own_scope, still_the_actor(access.actor))


class LeanCaseRead(LeanCaseAnswer):
    """`answer(request)`: the case read's response, or None for the full path to give."""

    async def answer(self, request: Request) -> Response | None:
        access = self._access(request)
        if access is None:
            return None
        try:
            case_id = uuid.UUID(request.path_params["case_id"])
        except (KeyError, ValueError):
            return None  # the full path answers 422
        rereferrals = access.grant.view == "coordinator"
        values = {"case_id": case_id, **access.scope_params(), **actor_params(access.actor)}
        sections = access.readable_sections
        compiled = access.prepared(
            "lean_case_read",
            lambda: self._statements.compile(
                case_statement(access, self._statements.engine.dialect, rereferrals)
            ),
            sections,
            rereferrals,
        )
        row = await self._statements.fetchrow(compiled, values)
        if row is None:
            return None  # changed account, no such case, out of scope, or break-glass
        request.state.actor = access.actor
        case, _, parts = repository.case_of_row(row, False, True, rereferrals)
        view = views.detail_view(self._keys.ring, self._keys.workflow, case, parts, sections)
        response = views.case_response(view, case.version)
        # built first: an answer that cannot be built leaves no event
        event = audit.build_event(
            request,
            action="case.read",
            resource_type="case",
            resource_ids=[case_id],
            fields=views.detail_fields(rereferrals),
            actor=access.actor,
        )
        await self._sealer.chained(event)  # answered only once its event is in the chain
        return response

    def _access(self, request: Request) -> Access | None:
        """The remembered actor's access to read cases, if this path may answer for them."""
        if self._keys.previous_blind_key is not None:
            return None  # re-referrals are looked up under both keys: the full path's work
        access = self._remembered.access(request, "case", "read")
        if access is None or access.grant.view == "referrer":
            return None  # the full path's 403, or the referrer's view of the case alone
        return access


async def answer(request: Request) -> Response | None:
    """The read route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanCaseRead | None = request.app.state.lean_case_read
    return None if lean is None else await lean.answer(request)
