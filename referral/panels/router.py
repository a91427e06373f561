"""/api/v1/panel-meetings: HTTP only."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlmodel import select

from referral import audit
from referral.authz.dependencies import Access, authorize
from referral.cases.dependencies import KeysDep, optional_version
from referral.db import SessionDep
from referral.models import PanelMeeting
from referral.pagination import Page, PageParams, keyset, page_params, split_page
from referral.panels import service
from referral.panels.schemas import (
    DecisionCreate,
    DecisionRecorded,
    PanelMeetingCreate,
    PanelMeetingOut,
)
from referral.routing import API_PREFIX, ProblemRoute

router = APIRouter(prefix=f"{API_PREFIX}/panel-meetings", tags=["panels"], route_class=ProblemRoute)


def _can(action: str) -> Any:
    return Annotated[Access, Depends(authorize("panel_meeting", action))]


def _out(meeting: PanelMeeting) -> PanelMeetingOut:
    return PanelMeetingOut.model_validate(meeting, from_attributes=True)


@router.post("", response_model=PanelMeetingOut, status_code=201)
async def create_meeting(
    request: Request, session: SessionDep, body: PanelMeetingCreate, access: _can("create")
) -> PanelMeetingOut:
    meeting = await service.create_meeting(session, access, body)
    audit.record(
        session,
        request,
        action="panel.create",
        resource_type="panel_meeting",
        resource_ids=[meeting.id],
        fields=body.model_fields_set,
    )
    return _out(meeting)


@router.get("", response_model=Page[PanelMeetingOut])
async def list_meetings(
    request: Request,
    session: SessionDep,
    page: Annotated[PageParams, Depends(page_params)],
    access: _can("list"),
) -> Page[PanelMeetingOut]:
    stmt = keyset(select(PanelMeeting).where(access.filter()), PanelMeeting.id, page)
    rows, cursor = split_page(list((await session.exec(stmt)).all()), page, lambda m: m.id)
    audit.record(
        session,
        request,
        action="panel.list",
        resource_type="panel_meeting",
        resource_ids=[m.id for m in rows],
    )
    return Page(items=[_out(m) for m in rows], next_cursor=cursor)


@router.get("/{meeting_id}", response_model=PanelMeetingOut)
async def read_meeting(
    request: Request, session: SessionDep, meeting_id: uuid.UUID, access: _can("read")
) -> PanelMeetingOut:
    meeting = await service.meeting_in_scope(session, access, meeting_id)
    audit.record(
        session,
        request,
        action="panel.read",
        resource_type="panel_meeting",
        resource_ids=[meeting.id],
    )
    return _out(meeting)


@router.post(
    "/{meeting_id}/decisions",
    response_model=DecisionRecorded,
    status_code=201,
    summary="Record the panel's decision on a case at the panel",
)
async def record_decision(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    meeting_id: uuid.UUID,
    body: DecisionCreate,
    access: _can("record_decision"),
    version: Annotated[int | None, Depends(optional_version)],
) -> DecisionRecorded:
    meeting = await service.meeting_in_scope(session, access, meeting_id)
    decision = await service.record_decision(session, keys, access, meeting, body, version)
    audit.record(
        session,
        request,
        action="panel.record_decision",
        resource_type="case",
        resource_ids=[body.case_id, meeting.id, decision.id],
        fields=body.model_fields_set - {"case_id"},
    )
    return DecisionRecorded(id=decision.id, case_id=decision.case_id, decision=decision.decision)
