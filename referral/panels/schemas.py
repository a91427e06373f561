from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field

from referral.auth.schemas import StrictRequest
from referral.cases.schemas import LongText
from referral.models.enums import Agency, PanelDecisionCode


class PanelMeetingCreate(StrictRequest):
    meeting_date: date
    attendance: list[Agency] = Field(min_length=1, max_length=7)


class PanelMeetingOut(BaseModel):
    id: uuid.UUID
    municipality_id: uuid.UUID
    meeting_date: date
    attendance: list[str]
    chair_user_id: uuid.UUID


class DecisionCreate(StrictRequest):
    case_id: uuid.UUID
    decision: PanelDecisionCode
    rationale: LongText
    dissenting_agencies: list[Agency] = Field(default_factory=list, max_length=7)
    dissent: LongText | None = None


class DecisionRecorded(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    decision: str
