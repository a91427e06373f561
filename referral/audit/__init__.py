"""The audit trail: one event per read, change, sign-in and denied attempt.

An allowed action's event is added to the request's own session, so it commits or rolls back
with the change it describes. A denied or failed attempt is written by `record_denied` in a
transaction of its own, after the request's transaction has rolled back.

Events carry ids, codes and field names only: never a personal value.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Iterable
from types import SimpleNamespace
from urllib.parse import quote

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.audit.chain import LIST_ELEMENT_CHARACTERS, pending_event, stage_pending, track
from referral.authz.actor import Actor

logger = logging.getLogger("referral.audit")


def _actor_of(request: Request) -> Actor | None:
    return getattr(request.state, "actor", None)


# What a list element may hold in the chain (printable ASCII but for the comma, the quote
# and the backslash), but for the percent sign, which marks an encoded value.
_PLAIN_CHARACTERS = LIST_ELEMENT_CHARACTERS.replace("%", "")
_PLAIN = re.compile(f"[{re.escape(_PLAIN_CHARACTERS)}]*")


def as_recorded(value: object) -> str:
    """An id, a field name or a query term as the trail records it. Ids, names and terms
    are recorded as they are. Anything else (a denied request's path segment is the
    caller's text) is percent-encoded, so that no element of a recorded list holds a comma,
    a quote, a backslash or non-ASCII text: the database's rendering of a list is injective
    on such lists (ADR 0013). A plain text has no "%", an encoded one has, so two different
    values are never recorded alike."""
    text = str(value)
    if isinstance(value, uuid.UUID):  # hex digits and dashes: plain, as it is
        return text
    return text if _PLAIN.fullmatch(text) else quote(text, safe=_PLAIN_CHARACTERS)


def build_event(
    request: Request,
    *,
    action: str,
    outcome: str = "allowed",
    resource_type: str | None = None,
    resource_ids: Iterable[uuid.UUID | str] = (),
    fields: Iterable[str] = (),
    status_code: int | None = None,
    actor: Actor | None = None,
    purpose: str | None = None,
) -> SimpleNamespace:
    actor = actor or _actor_of(request)
    return pending_event(
        actor_user_id=actor.user_id if actor else None,
        actor_role=actor.role if actor else None,
        actor_organisation_id=actor.organisation_id if actor else None,
        actor_municipality_id=actor.municipality_id if actor else None,
        action=action,
        resource_type=resource_type,
        resource_ids=[as_recorded(r) for r in resource_ids],
        outcome=outcome,
        status_code=status_code,
        request_id=getattr(request.state, "request_id", None),
        client_address=request.client.host if request.client else None,
        purpose=purpose or getattr(request.state, "audit_purpose", None),
        fields=list(_recorded_names(fields))
        if isinstance(fields, frozenset)
        else sorted(as_recorded(f) for f in fields),
    )


@functools.lru_cache(maxsize=256)
def _recorded_names(names: frozenset[str]) -> tuple[str, ...]:
    """The field names a view declares, as recorded: the same few sets, event after event."""
    return tuple(sorted(as_recorded(name) for name in names))


def record(session: AsyncSession, request: Request, **kwargs: object) -> None:
    """Add an event to the request's transaction; it is chained when that transaction commits."""
    track(session, build_event(request, **kwargs))  # type: ignore[arg-type]


async def record_denied(
    request: Request, status_code: int, reason: str, outcome: str = "denied"
) -> None:
    """Write a denied (or refused) attempt in its own transaction; never lets a failure hide
    the denial. The action is the one the handler said it was taking, if it said, else the
    route's guard, else the route's name."""
    # imported here: authz.dependencies -> db -> audit would be a cycle at import time
    from referral.authz.dependencies import route_permission

    route = request.scope.get("route")
    action = (
        getattr(request.state, "audit_action", None)
        or route_permission(route)
        or getattr(route, "name", None)
        or "unknown_route"
    )
    path_ids = [str(v) for v in request.path_params.values()]
    event = build_event(
        request,
        action=action,
        outcome=outcome,
        resource_ids=path_ids,
        status_code=status_code,
        purpose=reason,
    )
    try:
        async with request.app.state.sessionmaker() as session, session.begin():
            track(session, event)
            await stage_pending(session, request.app.state.audit_keys)
    except Exception:
        logger.exception("could not write the audit event of a denied request")
        raise
    await request.app.state.sealer.sealed()
