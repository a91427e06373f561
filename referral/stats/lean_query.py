"""The audited statistics query answered from the publication, on PostgreSQL (ADR 0029).

A published snapshot never changes, so the answer to a query of it never changes either:
the full path remembers each JSON answer it gives an actor who is not limited to their own
municipality, keyed by the exact path and query string asked (`PublishedAnswers`). When the
same query is asked again by an actor this worker has already authenticated
(`lean.RememberedActors`) with the same access, it is answered here, before the route's
dependencies run. Its audit event (the same as the full path's) goes to the sealer, whose
next round writes it into the chain only where one statement finds that

- the token's session is in force and the account is still the one remembered
  (`auth.dependencies.still_the_actor`), and
- the snapshot the answer came from is still the latest publication;

that statement runs once per round for all the queries alike that it holds (ADR 0031). The
remembered answer is sent only once the round has committed the event.

Anything else is the full path's, this path having written nothing: no bearer token or one
not verified before, an actor not remembered or changed since, one limited to their own
municipality, a CSV answer, a query not answered before, a newer publication, SQLite. So
validation, denials and their audit stay in one place, the route.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from sqlalchemy import Uuid, bindparam, literal, select

from referral import audit
from referral.audit.sealer import Sealer
from referral.auth.dependencies import actor_params, still_the_actor
from referral.authz.actor import Actor
from referral.lean import LeanAnswer, LeanStatements, RememberedActors, StillHolds
from referral.stats import service

ACTION = "stats.query"
RESOURCE_TYPE = "stats_snapshot"
JSON = "application/json"


def wants_csv(request: Request) -> bool:
    """The one rule for which form a query is answered in."""
    return "text/csv" in request.headers.get("accept", "")


def query_key(request: Request) -> tuple[str, bytes]:
    """What names a query exactly: its path (the measure) and its query string, as sent."""
    return request.scope["path"], request.scope["query_string"]


@dataclass(frozen=True, slots=True)
class PublishedAnswer:
    """A query's JSON answer from one snapshot, and what its audit event says of it."""

    snapshot_id: uuid.UUID
    body: bytes
    fields: tuple[str, ...]
    purpose: str


class PublishedAnswers:
    """The answers the full path has given, the least recently used forgotten first once
    their bodies pass `max_bytes`. Never a decision: the lean statement checks that the
    answer's snapshot is still the latest before anything is sent."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._answers: OrderedDict[tuple[str, bytes], PublishedAnswer] = OrderedDict()

    def remember(self, key: tuple[str, bytes], answer: PublishedAnswer) -> None:
        if len(answer.body) > self._max_bytes:
            return
        self.forget(key)
        self._answers[key] = answer
        self._bytes += len(answer.body)
        while self._bytes > self._max_bytes:
            _, oldest = self._answers.popitem(last=False)
            self._bytes -= len(oldest.body)

    def forget(self, key: tuple[str, bytes]) -> None:
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)

    def of(self, key: tuple[str, bytes]) -> PublishedAnswer | None:
        answer = self._answers.get(key)
        if answer is not None:
            self._answers.move_to_end(key)
        return answer


def _statement(actor: Actor) -> Any:
    """A row only while the actor still holds and the answer's snapshot is the latest."""
    still_latest = service.latest_snapshot_id() == bindparam("snapshot_id", type_=Uuid)
    return select(literal(True)).where(still_the_actor(actor), still_latest)


class LeanStatsQuery(LeanAnswer):
    """`answer(request)`: a statistics query's response, or None for the full path to give;
    `remember(request, answer)`: what the full path gives, for the next time it is asked."""

    def __init__(
        self,
        statements: LeanStatements,
        remembered: RememberedActors,
        sealer: Sealer,
        answers: PublishedAnswers | None = None,
    ) -> None:
        super().__init__(statements, remembered, sealer)
        self._answers = answers or PublishedAnswers()

    def remember(self, request: Request, answer: PublishedAnswer) -> None:
        self._answers.remember(query_key(request), answer)

    async def answer(self, request: Request) -> Response | None:
        if wants_csv(request):
            return None
        published = self._answers.of(query_key(request))
        if published is None:
            return None
        access = self._remembered.access(request, "stats", "query")
        if access is None or service.limited_to_own_area(access):
            return None  # the full path's 403, or an answer limited to one municipality
        actor = access.actor
        compiled = access.prepared(
            "lean_stats_query", lambda: self._statements.compile(_statement(actor))
        )
        values = {"snapshot_id": published.snapshot_id, **actor_params(actor)}
        event = audit.build_event(
            request,
            action=ACTION,
            resource_type=RESOURCE_TYPE,
            resource_ids=[published.snapshot_id],
            fields=published.fields,
            purpose=published.purpose,
            actor=actor,
        )
        # checked by the round that writes the event, once for every query it holds alike
        if not await self._sealer.chained(event, where=StillHolds.of(compiled, values)):
            return None  # a changed account, or a newer publication: nothing written
        request.state.actor = actor
        return Response(published.body, media_type=JSON)


async def answer(request: Request) -> Response | None:
    """The query route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanStatsQuery | None = request.app.state.lean_stats_query
    return None if lean is None else await lean.answer(request)
