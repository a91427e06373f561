"""Panel meetings belong to a municipality; a decision is recorded on a case at the panel."""

from __future__ import annotations

import uuid

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral import authz
from referral.authz.dependencies import Access
from referral.cases.repository import touch_case
from referral.cases.service import CaseKeys
from referral.crypto import seal_field
from referral.errors import Conflict, NotFound
from referral.models import CaseFile, PanelDecision, PanelMeeting
from referral.panels.schemas import DecisionCreate, PanelMeetingCreate


async def create_meeting(
    session: AsyncSession, access: Access, body: PanelMeetingCreate
) -> PanelMeeting:
    meeting = PanelMeeting(
        municipality_id=access.actor.municipality_id,
        meeting_date=body.meeting_date,
        attendance=sorted({str(a) for a in body.attendance}),
        chair_user_id=access.actor.user_id,
    )
    session.add(meeting)
    await session.flush()
    return meeting


async def record_decision(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    meeting: PanelMeeting,
    body: DecisionCreate,
    expected_version: int | None,
) -> PanelDecision:
    # The case must be one the actor may read: the same rule as every case route.
    in_scope = authz.scope_filter(access.policy, access.actor, "read", "case")
    case = (
        await session.exec(select(CaseFile).where(CaseFile.id == body.case_id, in_scope))
    ).first()
    if case is None or case.municipality_id != meeting.municipality_id:
        raise NotFound("No such case for this panel.")
    if case.state != "panel":
        raise Conflict(
            f"A panel decision is recorded while the case is at the panel; it is {case.state}.",
            extra={"state": case.state},
        )
    decision = PanelDecision(
        meeting_id=meeting.id,
        case_id=case.id,
        decision=body.decision,
        rationale_enc="",
        dissenting_agencies=sorted({str(a) for a in body.dissenting_agencies}),
        recorded_by=access.actor.user_id,
    )
    seal_field(keys.ring, decision, "rationale", body.rationale)
    seal_field(keys.ring, decision, "dissent", body.dissent)
    session.add(decision)
    await touch_case(session, case, expected_version)
    await session.flush()
    return decision


async def meeting_in_scope(
    session: AsyncSession, access: Access, meeting_id: uuid.UUID
) -> PanelMeeting:
    meeting = (
        await session.exec(
            select(PanelMeeting).where(PanelMeeting.id == meeting_id, access.filter())
        )
    ).first()
    if meeting is None:
        raise NotFound("No such panel meeting.")
    return meeting
