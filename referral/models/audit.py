"""The audit event: who did what to which resource, when, and with what outcome.

Never personal values: only ids, codes and field names.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Integer, String, Uuid
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow

OUTCOMES = ("allowed", "denied", "error")


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (CheckConstraint("outcome IN ('allowed', 'denied', 'error')", name="outcome"),)

    seq: int | None = Field(
        default=None,
        sa_type=BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
    )
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor_user_id: uuid.UUID | None = Field(default=None, sa_type=Uuid, index=True)
    actor_role: str | None = Field(default=None, sa_type=String(32))
    actor_organisation_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    actor_municipality_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    action: str = Field(sa_type=String(64), index=True)
    resource_type: str | None = Field(default=None, sa_type=String(32))
    resource_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    outcome: str = Field(sa_type=String(8))
    status_code: int | None = Field(default=None)
    request_id: str | None = Field(default=None, sa_type=String(64))
    client_address: str | None = Field(default=None, sa_type=String(64))
    purpose: str | None = Field(default=None, sa_type=String(64))
    fields: list[str] = Field(default_factory=list, sa_type=JSON)
