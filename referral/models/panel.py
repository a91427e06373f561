"""Multi-agency panel meetings and their per-case decisions."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, CheckConstraint, Column, Date, ForeignKey, String, Text, Uuid
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow, uuid7
from referral.models.enums import PanelDecisionCode, sql_in


class PanelMeeting(SQLModel, table=True):
    __tablename__ = "panel_meeting"

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    municipality_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("municipality.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    meeting_date: date = Field(sa_type=Date)
    attendance: list[str] = Field(default_factory=list, sa_type=JSON)
    chair_user_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=False)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PanelDecision(SQLModel, table=True):
    __tablename__ = "panel_decision"
    __table_args__ = (
        CheckConstraint(f"decision IN ({sql_in(PanelDecisionCode)})", name="decision"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    meeting_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("panel_meeting.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    case_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("case_file.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    decision: str = Field(sa_type=String(32))
    rationale_enc: str = Field(sa_type=Text)
    dissenting_agencies: list[str] = Field(default_factory=list, sa_type=JSON)
    dissent_enc: str | None = Field(default=None, sa_type=Text)
    recorded_by: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=False)
    )
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
