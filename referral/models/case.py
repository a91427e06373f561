"""The case aggregate: the referral, the subject, the lifecycle, and what is recorded about it.

Columns ending in `_enc` hold AES-256-GCM ciphertext (referral/crypto.py), bound to their
table, column and row. Only non-identifying columns are in clear: codes, dates, age band.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow, uuid7
from referral.models.enums import (
    AgeBand,
    Agency,
    Concern,
    ConsentGiver,
    Gender,
    InterventionStatus,
    InterventionType,
    ReviewKind,
    Section,
    Urgency,
    sql_in,
)

STATES = (
    "submitted",
    "screening",
    "assessment",
    "panel",
    "consent_pending",
    "support",
    "monitoring",
    "closed",
)


def _fk(target: str, *, nullable: bool = False, index: bool = True) -> Column:
    return Column(Uuid, ForeignKey(target, ondelete="RESTRICT"), nullable=nullable, index=index)


def _case_fk() -> Column:
    return Column(Uuid, ForeignKey("case_file.id", ondelete="CASCADE"), nullable=False, index=True)


class CaseFile(SQLModel, table=True):
    __tablename__ = "case_file"
    __table_args__ = (
        CheckConstraint(f"state IN ({sql_in(STATES)})", name="state"),
        CheckConstraint(f"referrer_sector IN ({sql_in(Agency)})", name="referrer_sector"),
        CheckConstraint(f"primary_concern IN ({sql_in(Concern)})", name="primary_concern"),
        CheckConstraint(f"urgency IN ({sql_in(Urgency)})", name="urgency"),
        CheckConstraint(f"subject_gender IN ({sql_in(Gender)})", name="subject_gender"),
        CheckConstraint(f"subject_age_band IN ({sql_in(AgeBand)})", name="subject_age_band"),
        Index("ix_case_file_municipality_id_state", "municipality_id", "state"),
        # The case list walks its scope in id order (keyset paging): these let it stop
        # after a page instead of sorting the whole municipality.
        Index("ix_case_file_municipality_id_id", "municipality_id", "id"),
        Index("ix_case_file_referrer_user_id_id", "referrer_user_id", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    municipality_id: uuid.UUID = Field(sa_column=_fk("municipality.id", index=False))
    referrer_user_id: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    referrer_organisation_id: uuid.UUID = Field(sa_column=_fk("organisation.id", index=False))
    referrer_sector: str = Field(sa_type=String(32))
    primary_concern: str = Field(sa_type=String(32))
    urgency: str = Field(sa_type=String(16))
    state: str = Field(sa_type=String(32))
    closure_outcome: str | None = Field(default=None, sa_type=String(32))
    exit_reason: str | None = Field(default=None, sa_type=String(32))

    subject_gender: str = Field(sa_type=String(16))
    subject_age_band: str = Field(sa_type=String(8))
    # A random id per person (shared by re-referrals): statistics count people by it, so
    # purging identity (and the blind index) leaves published counts unchanged.
    stat_person: uuid.UUID = Field(default_factory=uuid.uuid4, sa_type=Uuid)
    blind_index: str | None = Field(default=None, sa_type=String(64), index=True)
    given_name_enc: str | None = Field(default=None, sa_type=Text)
    family_name_enc: str | None = Field(default=None, sa_type=Text)
    date_of_birth_enc: str | None = Field(default=None, sa_type=Text)
    address_enc: str | None = Field(default=None, sa_type=Text)
    contacts_enc: str | None = Field(default=None, sa_type=Text)
    guardian_enc: str | None = Field(default=None, sa_type=Text)
    languages_enc: str | None = Field(default=None, sa_type=Text)
    description_enc: str | None = Field(default=None, sa_type=Text)
    indicators_enc: str | None = Field(default=None, sa_type=Text)

    legal_hold_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    legal_hold_by: uuid.UUID | None = Field(
        default=None, sa_column=_fk("user_account.id", nullable=True, index=False)
    )
    legal_hold_reason_enc: str | None = Field(default=None, sa_type=Text)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    submitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    screening_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    assessment_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    panel_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    consent_pending_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    support_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    monitoring_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)


class CaseTransition(SQLModel, table=True):
    """Who moved the case, from where to where, when and why."""

    __tablename__ = "case_transition"

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    from_state: str = Field(sa_type=String(32))
    to_state: str = Field(sa_type=String(32))
    outcome: str | None = Field(default=None, sa_type=String(32))
    exit_reason: str | None = Field(default=None, sa_type=String(32))
    immediate_risk: bool = Field(default=False)
    reason_enc: str | None = Field(default=None, sa_type=Text)
    actor_user_id: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    actor_role: str = Field(sa_type=String(32))
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class IdempotencyRecord(SQLModel, table=True):
    """A replayable outcome of a create request, per user and Idempotency-Key."""

    __tablename__ = "idempotency_record"

    user_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    )
    key: str = Field(sa_type=String(128), primary_key=True)
    request_hash: str = Field(sa_type=String(64))
    status_code: int
    response: dict = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CaseNote(SQLModel, table=True):
    __tablename__ = "case_note"
    __table_args__ = (CheckConstraint(f"section IN ({sql_in(Section)})", name="section"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    section: str = Field(sa_type=String(16))
    kind: str = Field(default="note", sa_type=String(32))
    author_user_id: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    author_agency: str = Field(sa_type=String(32))
    body_enc: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CaseScreening(SQLModel, table=True):
    __tablename__ = "case_screening"
    __table_args__ = (UniqueConstraint("case_id"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    summary_enc: str = Field(sa_type=Text)
    rereferrals_reviewed: bool = Field(default=False)
    recorded_by: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CaseAssessment(SQLModel, table=True):
    """A vulnerability assessment: factors scored on engagement, intent, capability."""

    __tablename__ = "case_assessment"
    __table_args__ = (CheckConstraint(f"section IN ({sql_in(Section)})", name="section"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    section: str = Field(sa_type=String(16))
    author_user_id: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    author_agency: str = Field(sa_type=String(32))
    factors_enc: str = Field(sa_type=Text)
    summary_enc: str | None = Field(default=None, sa_type=Text)
    assessed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CaseConsent(SQLModel, table=True):
    __tablename__ = "case_consent"
    __table_args__ = (CheckConstraint(f"given_by IN ({sql_in(ConsentGiver)})", name="given_by"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    given_by: str = Field(sa_type=String(16))
    guardian_name_enc: str | None = Field(default=None, sa_type=Text)
    scope: list[str] = Field(default_factory=list, sa_type=JSON)
    given_on: date = Field(sa_type=Date)
    recorded_by: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    withdrawn_on: date | None = Field(default=None, sa_type=Date)
    version: int = Field(default=1)


class SupportPlan(SQLModel, table=True):
    __tablename__ = "support_plan"
    __table_args__ = (UniqueConstraint("case_id"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    goals_enc: str = Field(sa_type=Text)
    created_by: uuid.UUID = Field(sa_column=_fk("user_account.id", index=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Intervention(SQLModel, table=True):
    __tablename__ = "intervention"
    __table_args__ = (
        CheckConstraint(f"type IN ({sql_in(InterventionType)})", name="type"),
        CheckConstraint(f"agency IN ({sql_in(Agency)})", name="agency"),
        CheckConstraint(f"status IN ({sql_in(InterventionStatus)})", name="status"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    type: str = Field(sa_type=String(32))
    agency: str = Field(sa_type=String(32))
    status: str = Field(default="planned", sa_type=String(16))
    start_date: date | None = Field(default=None, sa_type=Date)
    end_date: date | None = Field(default=None, sa_type=Date)
    outcome_enc: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)


class CaseReview(SQLModel, table=True):
    __tablename__ = "case_review"
    __table_args__ = (
        CheckConstraint(f"kind IN ({sql_in(ReviewKind)})", name="kind"),
        Index("ix_case_review_open_due", "done_on", "due_on"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(sa_column=_case_fk())
    kind: str = Field(sa_type=String(16))
    months_after_exit: int | None = Field(default=None)
    due_on: date = Field(sa_type=Date)
    done_on: date | None = Field(default=None, sa_type=Date)
    outcome: str | None = Field(default=None, sa_type=String(32))
    notes_enc: str | None = Field(default=None, sa_type=Text)
    recorded_by: uuid.UUID | None = Field(
        default=None, sa_column=_fk("user_account.id", nullable=True, index=False)
    )
    version: int = Field(default=1)
