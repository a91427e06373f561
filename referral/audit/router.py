"""/api/v1/audit: the auditor's view of the trail and the break-glass queue. Itself audited."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import col, select

from referral import audit
from referral.audit import chain
from referral.audit.queries import mentions
from referral.audit.schemas import (
    AuditEventOut,
    AuditPage,
    BreakGlassOut,
    BreakGlassReview,
    VerificationOut,
)
from referral.authz.dependencies import Access, authorize
from referral.crypto import open_field, seal_field
from referral.db import SessionDep
from referral.errors import Busy, Conflict, NotFound
from referral.models import AuditEvent, BreakGlassGrant
from referral.models.base import utcnow
from referral.pagination import MAX_LIMIT
from referral.routing import API_PREFIX, ProblemRoute

router = APIRouter(prefix=f"{API_PREFIX}/audit", tags=["audit"], route_class=ProblemRoute)


def _can(action: str) -> Any:
    return Annotated[Access, Depends(authorize("audit", action))]


@router.get("/events", response_model=AuditPage, summary="Search the audit trail")
async def search_events(
    request: Request,
    session: SessionDep,
    access: _can("search"),
    actor_user_id: uuid.UUID | None = None,
    case_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Literal["allowed", "denied", "error"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int | None, Query(ge=0, description="next_after of the page before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> AuditPage:
    stmt = select(AuditEvent)
    if actor_user_id:
        stmt = stmt.where(AuditEvent.actor_user_id == actor_user_id)
    if case_id:
        stmt = stmt.where(mentions(session, case_id))
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if since:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    if after is not None:
        stmt = stmt.where(AuditEvent.seq > after)
    rows = list((await session.exec(stmt.order_by(AuditEvent.seq).limit(limit + 1))).all())
    next_after = rows[limit - 1].seq if len(rows) > limit else None
    rows = rows[:limit]
    query = {
        k: str(v)
        for k, v in {
            "actor_user_id": actor_user_id,
            "case_id": case_id,
            "action": action,
            "outcome": outcome,
            "since": since,
            "until": until,
        }.items()
        if v is not None
    }
    audit.record(
        session,
        request,
        action="audit.search",
        resource_type="audit_event",
        resource_ids=[str(r.seq) for r in rows],
        fields=sorted(query),
    )
    return AuditPage(items=[AuditEventOut.model_validate(r) for r in rows], next_after=next_after)


@router.get(
    "/verification", response_model=VerificationOut, summary="Verify the whole hash chain now"
)
async def verification(request: Request, session: SessionDep, access: _can("verify")) -> Any:
    # A walk reads every event: at national scale minutes of a connection and of the
    # worker's CPU. A second walk at the same time would tell nothing the first does not,
    # so it is refused (and audited) rather than run: auditors cannot exhaust the worker.
    state = request.app.state
    if state.verification_running:
        raise Busy(
            "A verification of the trail is running; ask again once it has finished.",
            headers={"Retry-After": "10"},
        )
    state.verification_running = True
    try:
        await state.sealer.sealed()  # anything left staged is chained first
        result = await chain.verify(session, state.audit_keys)
    finally:
        state.verification_running = False
    audit.record(
        session,
        request,
        action="audit.verify",
        resource_type="audit_event",
        purpose="ok" if result.ok else "broken",
    )
    return VerificationOut(
        ok=result.ok,
        checked=result.checked,
        unchained=result.unchained,
        staged=result.staged,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        first_broken=result.first_broken,
        reason=result.reason,
    )


def _grant_out(request: Request, grant: BreakGlassGrant) -> BreakGlassOut:
    ring = request.app.state.case_keys.ring
    return BreakGlassOut(
        id=grant.id,
        case_id=grant.case_id,
        user_id=grant.user_id,
        reason=open_field(ring, grant, "reason") or "",
        granted_at=grant.granted_at,
        expires_at=grant.expires_at,
        reviewed_at=grant.reviewed_at,
        reviewed_by=grant.reviewed_by,
        verdict=grant.verdict,
        review_note=open_field(ring, grant, "review_note"),
    )


@router.get(
    "/break-glass",
    response_model=list[BreakGlassOut],
    summary="The break-glass queue (pending reviews first)",
)
async def break_glass_queue(
    request: Request,
    session: SessionDep,
    access: _can("read_break_glass"),
    status: Literal["pending", "reviewed", "all"] = "pending",
) -> list[BreakGlassOut]:
    stmt = select(BreakGlassGrant)
    if status == "pending":
        stmt = stmt.where(col(BreakGlassGrant.reviewed_at).is_(None))
    elif status == "reviewed":
        stmt = stmt.where(col(BreakGlassGrant.reviewed_at).is_not(None))
    rows = (await session.exec(stmt.order_by(BreakGlassGrant.granted_at).limit(500))).all()
    audit.record(
        session,
        request,
        action="audit.break_glass_queue",
        resource_type="break_glass",
        resource_ids=[g.id for g in rows],
    )
    return [_grant_out(request, g) for g in rows]


@router.post(
    "/break-glass/{grant_id}/review",
    response_model=BreakGlassOut,
    summary="Record the auditor's verdict on a break-glass use",
)
async def review_break_glass(
    request: Request,
    session: SessionDep,
    grant_id: uuid.UUID,
    body: BreakGlassReview,
    access: _can("review_break_glass"),
) -> BreakGlassOut:
    grant = await session.get(BreakGlassGrant, grant_id)
    if grant is None:
        raise NotFound("No such break-glass grant.")
    if grant.reviewed_at is not None:
        raise Conflict("This break-glass use was already reviewed.")
    grant.reviewed_at = utcnow()
    grant.reviewed_by = access.actor.user_id
    grant.verdict = body.verdict
    grant.version += 1
    seal_field(request.app.state.case_keys.ring, grant, "review_note", body.note)
    session.add(grant)
    await session.flush()
    audit.record(
        session,
        request,
        action="audit.review_break_glass",
        resource_type="break_glass",
        resource_ids=[grant.id, grant.case_id],
        purpose=body.verdict,
        fields=sorted(body.model_fields_set),
    )
    return _grant_out(request, grant)
