"""A transition decided on the case as read, written by the sealer's round, on PostgreSQL
(ADR 0032).

A transition asked by an actor this worker has already authenticated
(`lean.RememberedActors`), with a body and an If-Match the full path would accept as they
are, is answered here, before the route's dependencies run:

- one statement on the driver reads the case with the lifecycle's facts and the records of
  the answer, as the lean read does (`lean_read.case_statement`), only while the actor still
  holds and the case is in their own scope;
- the full path's own rules decide the move on what was read (`service.decide_transition`);
- the move is handed to the sealer with its audit event (`lean.Change`): the round, in its
  transaction, bumps the case's version from the one read, as `repository.touch_case` does,
  and writes the transition's record, both only while the case is still at that version and
  the actor still holds, then writes the event, and commits.

Every write to a case bumps its version, so a case still at the version its facts were read
at still has those facts: the decision holds when the round writes it, as the full path's
holds at its UPDATE.

Whatever this path cannot answer exactly as the full path would, it leaves to the full path,
having changed nothing: no bearer token or one not verified before, an actor not remembered
or changed since, a referrer's view, a case missing, out of scope or reached by break-glass,
an If-Match or body the full path would refuse, a version already gone (412), a move the
lifecycle refuses (409), a move that schedules or cancels post-exit reviews or reads them, a
blind index moving to a new key, SQLite.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request, Response
from sqlalchemy import bindparam

from referral import audit
from referral.auth.dependencies import actor_params, still_the_actor
from referral.authz.dependencies import Access
from referral.cases import repository, service, views
from referral.cases.lean_case import LeanCaseAnswer
from referral.cases.lean_read import case_statement
from referral.cases.schemas import TransitionCreate
from referral.concurrency import expected_version
from referral.errors import ProblemError
from referral.lean import Change, json_body
from referral.models import CaseTransition

_RECORD_PREFIX = "record_"


def _move_statement(access: Access, columns: frozenset[str]) -> Any:
    """The move as one statement: the case's version bumped with `columns` from the version
    read, then the transition's record for the case moved; its id comes back only if both
    were written, which they are only while the actor still holds."""
    moved = repository.touch_where(columns, still_the_actor(access.actor)).cte("moved")
    table = CaseTransition.__table__
    values = {
        column.name: bindparam(_RECORD_PREFIX + column.name, type_=column.type)
        for column in table.columns
    }
    return repository.insert_for_each(table, values, moved).add_cte(moved)


class LeanTransition(LeanCaseAnswer):
    """`answer(request)`: the transition's answer, or None for the full path to give."""

    async def answer(self, request: Request) -> Response | None:
        asked = await self._asked(request)
        if asked is None:
            return None
        access, case_id, version, body = asked
        rereferrals = access.grant.view == "coordinator"
        dialect = self._statements.engine.dialect
        compiled = access.prepared(
            "lean_transition_read",
            lambda: self._statements.compile(case_statement(access, dialect, rereferrals, True)),
            access.readable_sections,
            rereferrals,
        )
        values = {"case_id": case_id, **access.scope_params(), **actor_params(access.actor)}
        row = await self._statements.fetchrow(compiled, values)
        if row is None:
            return None  # changed account, no such case, out of scope, or break-glass
        case, found, parts = repository.case_of_row(row, True, True, rereferrals)
        if case.version != version or case.monitoring_at is not None:
            return None  # the full path's 412, or a move that reads the post-exit reviews
        try:
            move = service.decide_transition(self._keys, access, case, found, body, False)
        except ProblemError:
            return None  # the full path's 409 or 422
        if move.schedules or move.cancels:
            return None  # writes the post-exit reviews too: the full path's
        change = self._change(access, case_id, version, move)
        request.state.actor = access.actor
        new = {**change.values, "version": version + 1}
        for name in (*move.case_values, "updated_at", "version"):
            setattr(case, name, new[name])
        view = views.detail_view(
            self._keys.ring, self._keys.workflow, case, parts, access.readable_sections
        )
        response = views.case_response(view, case.version)
        event = audit.build_event(
            request,
            action="case.transition",
            resource_type="case",
            resource_ids=[case_id, move.record["id"]],
            fields=service.transition_fields(body, move.record["to_state"]),
            actor=access.actor,
        )
        written = await self._sealer.chained(event, where=change)
        return response if written else None  # the case moved on meanwhile, or the actor

    def _change(self, access: Access, case_id: uuid.UUID, version: int, move: Any) -> Change:
        columns = frozenset(move.case_values)
        compiled = access.prepared(
            "lean_transition_move",
            lambda: self._statements.compile(_move_statement(access, columns)),
            columns,
        )
        values = repository.touch_params(case_id, version, **move.case_values)
        values |= {_RECORD_PREFIX + name: value for name, value in move.record.items()}
        return Change(compiled, values | actor_params(access.actor), returns=move.record["id"])

    async def _asked(
        self, request: Request
    ) -> tuple[Access, uuid.UUID, int, TransitionCreate] | None:
        """The remembered actor's access, the case, the version and the body, if this path
        may answer for them."""
        if self._keys.previous_blind_key is not None:
            return None  # re-referrals are looked up under both keys: the full path's work
        access = self._remembered.access(request, "case", "transition")
        if access is None or access.grant.view == "referrer":
            return None  # the full path's 403, or the referrer's view of the case alone
        try:
            case_id = uuid.UUID(request.path_params["case_id"])
            version = expected_version(request)
        except (KeyError, ValueError, ProblemError):
            return None  # the full path's 422, 428 or 412
        body = await json_body(request, TransitionCreate)
        if body is None:
            return None  # the full path's 415 or 422
        return access, case_id, version, body


async def answer(request: Request) -> Response | None:
    """The transition route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanTransition | None = request.app.state.lean_transition
    return None if lean is None else await lean.answer(request)
