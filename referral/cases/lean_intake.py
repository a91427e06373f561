"""Referral intake written by the sealer's round, on PostgreSQL (ADR 0032).

A referral from an actor this worker has already authenticated (`lean.RememberedActors`),
with a body and an Idempotency-Key the full path would accept as they are, is answered
here, before the route's dependencies run. The case is built by the full path's own code
(`service.new_referral`); what differs is who writes it. The request sends no statement of
its own: it hands the sealer its audit event with the write as the event's condition
(`lean.Change`). The round runs the write in its transaction, one statement that

- claims the Idempotency-Key with this request's receipt, as the full path's claim does,
- writes the case only if the claim was made, by the full path's INSERT
  (`repository.case_insert_for_each`),
- and both only while the token's session is in force and the account is still the one
  remembered (`auth.dependencies.still_the_actor`), checked as it runs,

then writes the event into the chain, and commits: the case and its event, or neither. The
answer is sent only once that has committed.

Whatever this path cannot answer exactly as the full path would, it leaves to the full path,
having changed nothing: no bearer token or one not verified before, an actor not remembered
or changed since, an actor the policy does not let refer or of no municipality, a body or a
key the full path would refuse, a key used before (a replay, or a reuse with another body),
SQLite. Denials and refusals are therefore decided, answered and audited in one place only.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql

from referral import audit
from referral.auth.dependencies import actor_params, still_the_actor
from referral.authz.dependencies import Access
from referral.cases import repository, service
from referral.cases.dependencies import valid_idempotency_key
from referral.cases.lean_case import LeanCaseAnswer
from referral.cases.schemas import ReferralCreate
from referral.lean import Change, json_body
from referral.models import IdempotencyRecord

_CLAIM_PREFIX = "claim_"


def _statement(access: Access) -> Any:
    """The claim and the case as one statement: the case's id comes back only if both were
    written, which they are only while the actor still holds and the key was not used."""
    table = IdempotencyRecord.__table__
    names = [column.name for column in table.columns]
    claimed = (
        postgresql.insert(table)
        .from_select(
            names,
            sa_select(
                *(bindparam(_CLAIM_PREFIX + name, type_=table.c[name].type) for name in names)
            ).where(still_the_actor(access.actor)),
        )
        .on_conflict_do_nothing(index_elements=[table.c.user_id, table.c.key])
        .returning(table.c.key)
        .cte("claimed")
    )
    return repository.case_insert_for_each(claimed).add_cte(claimed)


class LeanIntake(LeanCaseAnswer):
    """`answer(request)`: the referral's 201, or None for the full path to give."""

    async def answer(self, request: Request) -> Response | None:
        access = self._access(request)
        if access is None:
            return None
        key = request.headers.get("idempotency-key")
        if not valid_idempotency_key(key):
            return None  # the full path's 400
        body = await json_body(request, ReferralCreate)
        if body is None:
            return None  # the full path's 415 or 422
        referral = service.new_referral(self._keys, access, body)
        claim = service.idempotency_values(access.actor.user_id, key, body, referral.receipt)
        values = {f"{_CLAIM_PREFIX}{name}": value for name, value in claim.items()}
        values |= repository.case_params(**referral.case) | actor_params(access.actor)
        compiled = access.prepared(
            "lean_intake", lambda: self._statements.compile(_statement(access))
        )
        request.state.actor = access.actor
        receipt = referral.receipt
        response = Response(
            receipt.model_dump_json(),
            status_code=201,
            media_type="application/json",
            headers={"Location": f"/api/v1/cases/{receipt.id}"},
        )
        event = audit.build_event(
            request,
            action="case.create",
            resource_type="case",
            resource_ids=[receipt.id],
            fields=service.fields_given(body),
            actor=access.actor,
        )
        change = Change(compiled, values, returns=receipt.id)
        written = await self._sealer.chained(event, where=change)
        return response if written else None  # a key used before, or a changed account

    def _access(self, request: Request) -> Access | None:
        """The remembered actor's access to refer, if this path may answer for them."""
        access = self._remembered.access(request, "case", "create")
        if access is None or access.actor.municipality_id is None:
            return None  # the full path's 403
        return access


async def answer(request: Request) -> Response | None:
    """The intake route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanIntake | None = request.app.state.lean_intake
    return None if lean is None else await lean.answer(request)
