"""/api/v1/audit: the auditor's view of the trail and the break-glass queue. Itself audited."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from sqlmodel import col, select

from referral import audit
from referral.audit import chain, verifications
from referral.audit.queries import mentions
from referral.audit.schemas import (
    AuditEventOut,
    AuditPage,
    BreakGlassOut,
    BreakGlassReview,
    VerificationCreate,
    VerificationOut,
)
from referral.authz.dependencies import Access, authorize
from referral.crypto import open_field, seal_field
from referral.db import SessionDep
from referral.errors import Conflict, NotFound
from referral.models import AuditEvent, AuditVerification, BreakGlassGrant
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


def _verification_url(walk_id: uuid.UUID) -> str:
    return f"{API_PREFIX}/audit/verifications/{walk_id}"


@router.post(
    "/verifications",
    response_model=VerificationOut,
    status_code=202,
    summary="Start a walk of the whole hash chain, or join the one running",
    description="Answered at once: the server walks the trail and keeps the walk's progress "
    "and result at the `Location` given. One walk runs at a time; asking while one runs "
    "answers that one (409 if it was asked for against another checkpoint). With a "
    "`checkpoint` (the head of an earlier walk, kept outside the database), the walk also "
    "finds a trail cut short after it, or rewritten up to it.",
)
async def start_verification(
    request: Request,
    response: Response,
    background: BackgroundTasks,
    session: SessionDep,
    access: _can("verify"),
    body: VerificationCreate | None = None,
) -> Any:
    given = body.checkpoint if body else None
    checkpoint = chain.Checkpoint(given.seq, given.hash) if given else None
    walk, started = await verifications.claim(session, access.actor.user_id, checkpoint)
    if started:  # after the commit, so the walk's row is there for it to finish
        background.add_task(request.app.state.verifier.start, walk.id, checkpoint)
    response.headers["Location"] = _verification_url(walk.id)
    audit.record(
        session,
        request,
        action="audit.verify",
        resource_type="audit_verification",
        resource_ids=[walk.id],
        purpose="started" if started else "joined",
        fields=["checkpoint"] if checkpoint else [],
    )
    return walk


@router.get(
    "/verifications",
    response_model=list[VerificationOut],
    summary="The latest walks of the hash chain, newest first",
)
async def list_verifications(
    request: Request,
    session: SessionDep,
    access: _can("verify"),
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> Any:
    statement = (
        select(AuditVerification)
        .order_by(col(AuditVerification.requested_at).desc(), col(AuditVerification.id).desc())
        .limit(limit)
    )
    walks = (await session.exec(statement)).all()
    audit.record(
        session,
        request,
        action="audit.verifications",
        resource_type="audit_verification",
        resource_ids=[walk.id for walk in walks],
    )
    return walks


@router.get(
    "/verifications/{verification_id}",
    response_model=VerificationOut,
    summary="One walk of the hash chain: its progress, or its result",
)
async def read_verification(
    request: Request, session: SessionDep, verification_id: uuid.UUID, access: _can("verify")
) -> Any:
    walk = await session.get(AuditVerification, verification_id)
    if walk is None:
        raise NotFound("No such verification.")
    audit.record(
        session,
        request,
        action="audit.verification",
        resource_type="audit_verification",
        resource_ids=[walk.id],
        purpose=walk.status,
    )
    return walk


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
