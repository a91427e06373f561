"""The audited case list in one statement on the driver, on PostgreSQL (ADR 0030).

A list page asked by an actor this worker has already authenticated (`lean.RememberedActors`)
with the coordinator's or a panel member's view, with no filter (at most `limit` and
`cursor`, each in its plain form), is answered here, before the route's dependencies run:

the page, read by the full path's own statement (`repository.list_statement`) under the
same access rule, only where the token's session is in force and the account is still the
one remembered (`auth.dependencies.still_the_actor`). Its audit event names the cases
listed; the sealer writes it into the chain (`Sealer.chained`, ADR 0031), and nothing is
sent until that has committed, so no page leaves without its event. An
empty answer (an empty page, or an actor that no longer holds) is the full path's, and so
is everything else: no bearer token or one not verified before, an actor not remembered, a
referrer, any filter, a parameter in another form, SQLite.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response

from referral import audit
from referral.auth.dependencies import actor_params, still_the_actor
from referral.authz.dependencies import Access
from referral.cases import repository, views
from referral.cases.lean_case import LeanCaseAnswer
from referral.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams

_PLAIN_LIMIT = re.compile(r"[1-9][0-9]{0,2}")


def page_asked(query_string: bytes) -> PageParams | None:
    """The page a query string asks for, if it asks nothing but `limit` and `cursor`, each
    at most once and in the form the full path would read the same way; else None."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    asked = dict(pairs)
    if len(asked) != len(pairs) or not asked.keys() <= {"limit", "cursor"}:
        return None
    limit = asked.get("limit", str(DEFAULT_LIMIT))
    if not _PLAIN_LIMIT.fullmatch(limit) or int(limit) > MAX_LIMIT:
        return None
    cursor = asked.get("cursor")
    if cursor is not None:
        try:
            if str(uuid.UUID(cursor)) != cursor:
                return None
        except ValueError:
            return None
    return PageParams(limit=int(limit), cursor=None if cursor is None else uuid.UUID(cursor))


def _page_statement(access: Access, with_cursor: bool) -> Any:
    """The unfiltered page under the access rule, only while the actor still holds."""
    page = repository.list_statement(access, frozenset(), with_cursor)
    return page.where(still_the_actor(access.actor))


class LeanCaseList(LeanCaseAnswer):
    """`answer(request)`: a list page's response, or None for the full path to give."""

    async def answer(self, request: Request) -> Response | None:
        params = page_asked(request.scope["query_string"])
        if params is None:
            return None
        access = self._remembered.access(request, "case", "list")
        if access is None or access.grant.view == "referrer":
            return None  # the full path's 403, or the referrer's list of their own
        with_cursor = params.cursor is not None
        compiled = access.prepared(
            "lean_case_list",
            lambda: self._statements.compile(_page_statement(access, with_cursor)),
            with_cursor,
        )
        values = {**repository.list_values(access, params), **actor_params(access.actor)}
        found = await self._statements.fetch(compiled, values)
        if not found:
            return None  # an empty page, or an actor that no longer holds
        rows, cursor = repository.listed_page(found, params)
        # built first: a page that cannot be built leaves no event
        response = views.list_page_response(self._keys.ring, rows, cursor)
        event = audit.build_event(
            request,
            action="case.list",
            resource_type="case",
            resource_ids=[repository.listed_id(row) for row in rows],
            actor=access.actor,
        )
        request.state.actor = access.actor
        await self._sealer.chained(event)  # answered only once its event is in the chain
        return response


async def answer(request: Request) -> Response | None:
    """The list route's lean answer (`routing.answered_first`), where the app has one."""
    lean: LeanCaseList | None = request.app.state.lean_case_list
    return None if lean is None else await lean.answer(request)
