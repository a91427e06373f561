"""Requests and role-appropriate responses for cases. Table models never cross HTTP."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from referral.auth.schemas import StrictRequest
from referral.models.enums import (
    AgeBand,
    Agency,
    Concern,
    ConsentGiver,
    Gender,
    InterventionStatus,
    InterventionType,
    Section,
    Urgency,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,39}$")]


class Indicator(StrEnum):
    expresses_extremist_views = "expresses_extremist_views"
    shares_extremist_material = "shares_extremist_material"
    contact_with_extremist_groups = "contact_with_extremist_groups"
    justifies_violence = "justifies_violence"
    sudden_behaviour_change = "sudden_behaviour_change"
    social_isolation = "social_isolation"
    online_radicalisation = "online_radicalisation"
    travel_intent = "travel_intent"
    interest_in_weapons = "interest_in_weapons"
    other = "other"


class Guardian(StrictRequest):
    name: Name
    relationship: Annotated[str, StringConstraints(strip_whitespace=True, max_length=60)]
    contacts: ShortText | None = None


class Subject(StrictRequest):
    given_name: Name
    family_name: Name
    date_of_birth: date
    gender: Gender = Gender.unknown
    address: ShortText | None = None
    contacts: ShortText | None = None
    guardian: Guardian | None = None
    languages: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=list, max_length=10
    )

    @field_validator("date_of_birth")
    @classmethod
    def _plausible(cls, value: date) -> date:
        if value > date.today() or value.year < 1900:
            raise ValueError("date of birth must be in the past and after 1900")
        return value

    @model_validator(mode="after")
    def _guardian_for_minors(self) -> Subject:
        if age_on(self.date_of_birth, date.today()) < 18 and self.guardian is None:
            raise ValueError("a guardian is required for a subject under 18")
        return self


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def age_band(born: date, day: date) -> AgeBand:
    age = age_on(born, day)
    if age <= 14:
        return AgeBand.child
    if age <= 17:
        return AgeBand.adolescent
    if age <= 24:
        return AgeBand.young_adult
    return AgeBand.adult


class ReferralCreate(StrictRequest):
    subject: Subject
    referrer_sector: Agency | None = Field(
        default=None, description="defaults to the agency of the referrer's organisation"
    )
    primary_concern: Concern
    description: LongText
    indicators: list[Indicator] = Field(min_length=1, max_length=20)
    urgency: Urgency = Urgency.routine


class ReferralReceipt(BaseModel):
    id: uuid.UUID
    reference: str
    stage: str
    submitted_at: datetime


class ReferrerCaseView(BaseModel):
    """What a referrer sees of their own referral: never what agencies wrote."""

    id: uuid.UUID
    reference: str
    stage: str
    outcome: str | None
    submitted_at: datetime
    closed_at: datetime | None


class SubjectOut(BaseModel):
    """Identity fields are None once purged by retention or erased."""

    given_name: str | None
    family_name: str | None
    date_of_birth: date | None
    gender: str
    age_band: str
    address: str | None
    contacts: str | None
    guardian: dict | None
    languages: list[str]


class NoteOut(BaseModel):
    id: uuid.UUID
    section: str
    kind: str
    author_user_id: uuid.UUID
    author_agency: str
    body: str
    created_at: datetime


class Factor(StrictRequest):
    dimension: Literal["engagement", "intent", "capability"]
    factor: Code
    score: int = Field(ge=0, le=3)


class AssessmentOut(BaseModel):
    id: uuid.UUID
    section: str
    author_agency: str
    factors: list[Factor]
    totals: dict[str, int]
    summary: str | None
    assessed_at: datetime


class ScreeningOut(BaseModel):
    summary: str
    rereferrals_reviewed: bool
    recorded_by: uuid.UUID
    recorded_at: datetime


class DecisionOut(BaseModel):
    id: uuid.UUID
    meeting_id: uuid.UUID
    decision: str
    rationale: str
    dissenting_agencies: list[str]
    dissent: str | None
    recorded_at: datetime


class ConsentOut(BaseModel):
    id: uuid.UUID
    given_by: str
    guardian_name: str | None
    scope: list[str]
    given_on: date
    withdrawn_on: date | None
    version: int


class InterventionOut(BaseModel):
    id: uuid.UUID
    type: str
    agency: str
    status: str
    start_date: date | None
    end_date: date | None
    outcome: str | None
    version: int


class PlanOut(BaseModel):
    goals: str
    updated_at: datetime


class ReviewOut(BaseModel):
    id: uuid.UUID
    kind: str
    months_after_exit: int | None
    due_on: date
    done_on: date | None
    outcome: str | None
    notes: str | None
    version: int


class SectionOut(BaseModel):
    notes: list[NoteOut]
    assessments: list[AssessmentOut]


class PanelCaseView(BaseModel):
    id: uuid.UUID
    reference: str
    municipality_id: uuid.UUID
    state: str
    closure_outcome: str | None
    exit_reason: str | None
    urgency: str
    referrer_sector: str
    primary_concern: str
    subject: SubjectOut
    description: str | None
    indicators: list[str]
    purged_at: datetime | None
    legal_hold: bool
    entered: dict[str, datetime]
    screening: ScreeningOut | None
    panel_decisions: list[DecisionOut]
    consents: list[ConsentOut]
    plan: PlanOut | None
    interventions: list[InterventionOut]
    reviews: list[ReviewOut]
    sections: dict[str, SectionOut]
    version: int


class RereferralHint(BaseModel):
    case_id: uuid.UUID
    reference: str
    state: str
    submitted_at: datetime


class CoordinatorCaseView(PanelCaseView):
    possible_rereferrals: list[RereferralHint]


class CaseListItem(BaseModel):
    id: uuid.UUID
    reference: str
    state: str
    urgency: str
    primary_concern: str
    subject_name: str
    subject_age_band: str
    submitted_at: datetime
    overdue_reviews: int
    version: int


class TransitionCreate(StrictRequest):
    to: str = Field(max_length=32)
    outcome: str | None = Field(default=None, max_length=32)
    exit_reason: str | None = Field(default=None, max_length=32)
    immediate_risk: bool = False
    reason: LongText | None = None


class InformationCreate(StrictRequest):
    body: LongText


class NoteCreate(StrictRequest):
    section: Section
    body: LongText


class ScreeningPut(StrictRequest):
    summary: LongText
    rereferrals_reviewed: bool = False


class AssessmentCreate(StrictRequest):
    section: Section | None = Field(
        default=None, description="defaults to the section the actor's agency writes in"
    )
    factors: list[Factor] = Field(min_length=1, max_length=50)
    summary: LongText | None = None


class ConsentCreate(StrictRequest):
    given_by: ConsentGiver
    guardian_name: Name | None = None
    scope: list[Code] = Field(min_length=1, max_length=20)
    given_on: date

    @model_validator(mode="after")
    def _guardian_named(self) -> ConsentCreate:
        if self.given_by is ConsentGiver.guardian and not self.guardian_name:
            raise ValueError("guardian_name is required when a guardian consents")
        return self


class ConsentWithdrawal(StrictRequest):
    withdrawn_on: date


class PlanPut(StrictRequest):
    goals: LongText


class InterventionCreate(StrictRequest):
    type: InterventionType
    agency: Agency
    start_date: date | None = None
    end_date: date | None = None


class InterventionUpdate(StrictRequest):
    status: InterventionStatus | None = None
    start_date: date | None = None
    end_date: date | None = None
    outcome: LongText | None = None


class ReviewCreate(StrictRequest):
    due_on: date


class ReviewRecord(StrictRequest):
    done_on: date
    outcome: Literal["on_track", "concern_remains", "no_concern", "not_reached"]
    notes: LongText | None = None


class BreakGlassCreate(StrictRequest):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class BreakGlassOut(BaseModel):
    grant_id: uuid.UUID
    case_id: uuid.UUID
    expires_at: datetime


class WorklistItem(BaseModel):
    review_id: uuid.UUID
    case_id: uuid.UUID
    reference: str
    kind: str
    due_on: date
    overdue: bool


def reference_of(case_id: uuid.UUID) -> str:
    return f"REF-{case_id.hex[-8:].upper()}"
