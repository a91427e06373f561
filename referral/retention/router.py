"""Legal hold, erasure and subject-access export of a case (coordinators). HTTP only."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import StringConstraints
from sqlmodel import select

from referral import audit
from referral.audit.queries import mentions
from referral.auth.schemas import StrictRequest
from referral.authz.dependencies import Access, authorize
from referral.cases import repository, views
from referral.cases.dependencies import KeysDep
from referral.cases.repository import touch_case
from referral.concurrency import expected_version, set_etag
from referral.crypto import seal_field
from referral.db import SessionDep
from referral.errors import Conflict
from referral.models import AuditEvent
from referral.models.base import utcnow
from referral.retention.service import purge_case
from referral.routing import API_PREFIX, ProblemRoute

router = APIRouter(
    prefix=f"{API_PREFIX}/cases/{{case_id}}", tags=["data protection"], route_class=ProblemRoute
)

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=2000)]


class ReasonIn(StrictRequest):
    reason: Reason


def _can(action: str) -> Any:
    return Annotated[Access, Depends(authorize("case", action))]


@router.put("/legal-hold", summary="Put the case on legal hold (stops purging and erasure)")
async def set_legal_hold(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: ReasonIn,
    access: _can("legal_hold"),
) -> dict:
    case = await repository.case_in_scope(session, access, case_id, request)
    if case.legal_hold_at is not None:
        raise Conflict("The case is already on legal hold.")
    seal_field(keys.ring, case, "legal_hold_reason", body.reason)
    await touch_case(
        session,
        case,
        expected_version(request),
        legal_hold_at=utcnow(),
        legal_hold_by=access.actor.user_id,
        legal_hold_reason_enc=case.legal_hold_reason_enc,
    )
    audit.record(
        session,
        request,
        action="case.legal_hold",
        resource_type="case",
        resource_ids=[case.id],
        fields=["legal_hold_at", "legal_hold_reason"],
    )
    set_etag(response, case.version)
    return {"legal_hold": True, "since": case.legal_hold_at}


@router.post("/legal-hold/release", summary="Lift the legal hold, with a reason")
async def release_legal_hold(
    request: Request,
    response: Response,
    session: SessionDep,
    case_id: uuid.UUID,
    body: ReasonIn,
    access: _can("legal_hold"),
) -> dict:
    case = await repository.case_in_scope(session, access, case_id, request)
    if case.legal_hold_at is None:
        raise Conflict("The case is not on legal hold.")
    await touch_case(
        session,
        case,
        expected_version(request),
        legal_hold_at=None,
        legal_hold_by=None,
        legal_hold_reason_enc=None,
    )
    audit.record(
        session,
        request,
        action="case.legal_hold_release",
        resource_type="case",
        resource_ids=[case.id],
        fields=["legal_hold_at"],
        purpose="released",
    )
    set_etag(response, case.version)
    return {"legal_hold": False}


@router.post("/erase", summary="Erase the subject's identity and every text (irreversible)")
async def erase(
    request: Request,
    response: Response,
    session: SessionDep,
    case_id: uuid.UUID,
    body: ReasonIn,
    access: _can("erase"),
) -> dict:
    case = await repository.case_in_scope(session, access, case_id, request)
    if case.legal_hold_at is not None:
        raise Conflict("The case is on legal hold; it cannot be erased.")
    if case.state != "closed":
        raise Conflict("Close the case before erasing it.", extra={"state": case.state})
    if case.purged_at is not None:
        raise Conflict("The case was already purged.")
    await touch_case(session, case, expected_version(request))
    touched = await purge_case(session, case)
    audit.record(
        session,
        request,
        action="case.erase",
        resource_type="case",
        resource_ids=[case.id],
        fields=touched,
        purpose="erasure",
    )
    set_etag(response, case.version)
    return {"erased": True, "purged_at": case.purged_at}


@router.get("/export", summary="Subject-access export: everything held about the subject")
async def export(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    access: _can("export"),
) -> dict:
    case = await repository.case_in_scope(session, access, case_id, request)
    parts = await repository.load_parts(session, case, access.readable_sections)
    view = views.as_json(
        views.detail_view(keys.ring, keys.workflow, case, parts, access.readable_sections)
    )
    # third parties' identities stay out: staff appear by agency and role, never by name or id
    for section in view["sections"].values():
        for note in section["notes"]:
            note.pop("author_user_id", None)
    if view.get("screening"):
        view["screening"].pop("recorded_by", None)
    events = (
        await session.exec(
            select(AuditEvent).where(mentions(session, case.id)).order_by(AuditEvent.seq)
        )
    ).all()
    view["access_log"] = [
        {
            "at": e.occurred_at.isoformat(),
            "action": e.action,
            "by_role": e.actor_role,
            "outcome": e.outcome,
        }
        for e in events
    ]
    audit.record(
        session,
        request,
        action="case.export",
        resource_type="case",
        resource_ids=[case.id],
        purpose="subject_access",
    )
    return {"case": view, "exported_at": utcnow().isoformat()}
