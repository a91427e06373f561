from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from referral.auth.schemas import StrictRequest
from referral.cases.schemas import LongText


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    occurred_at: datetime
    actor_user_id: uuid.UUID | None
    actor_role: str | None
    actor_organisation_id: uuid.UUID | None
    actor_municipality_id: uuid.UUID | None
    action: str
    resource_type: str | None
    resource_ids: list[str]
    outcome: str
    status_code: int | None
    request_id: str | None
    client_address: str | None
    purpose: str | None
    fields: list[str]
    hash: str | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_after: int | None


class CheckpointIn(StrictRequest):
    """A head of the chain kept outside the database: the `head_seq` and `head_hash` of an
    earlier walk, or what `referral audit checkpoint` printed."""

    seq: int = Field(ge=1, le=2**63 - 1)
    hash: str = Field(pattern="^[0-9a-f]{64}$")


class VerificationCreate(StrictRequest):
    """With a checkpoint, the walk also finds a trail cut short after it, or rewritten up to
    it by someone who could recompute the chain."""

    checkpoint: CheckpointIn | None = None


class VerificationOut(BaseModel):
    """A walk of the whole trail. `running` while it walks (`checked` grows as it goes); then
    `ok`, `broken` (`first_broken` names the first event that does not hold, `reason` says
    why) or `failed` (the walk could not finish; `reason` says why)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: Literal["running", "ok", "broken", "failed"]
    requested_by: uuid.UUID
    requested_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    checked: int
    unchained: int
    staged: int
    head_seq: int | None
    head_hash: str | None
    first_broken: int | None
    reason: str | None
    checkpoint_seq: int | None
    checkpoint_hash: str | None


class BreakGlassOut(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    user_id: uuid.UUID
    reason: str
    granted_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None
    reviewed_by: uuid.UUID | None
    verdict: str | None
    review_note: str | None


class BreakGlassReview(StrictRequest):
    verdict: Literal["justified", "unjustified"]
    note: LongText | None = None
