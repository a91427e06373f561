"""The audit event: who did what to which resource, when, and with what outcome.

Never personal values: only ids, codes and field names.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    Uuid,
)
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, job_constraints, utcnow, uuid7

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
    # The chain: hash = HMAC-SHA256(audit key, prev_hash || canonical JSON of the row).
    prev_hash: str | None = Field(default=None, sa_type=String(64))
    hash: str | None = Field(default=None, sa_type=String(64))


CHAIN_COLUMNS = ("seq", "prev_hash", "hash")

# An event committed with its request but not yet in the chain (ADR 0014). It carries its own
# MAC, so the sealer refuses a row written by anyone without the audit key. Rows are only
# ever inserted and, once sealed into `audit_event`, deleted.
audit_staged = Table(
    "audit_staged",
    SQLModel.metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    *(
        Column(column.name, column.type, nullable=column.nullable)
        for column in AuditEvent.__table__.columns
        if column.name not in CHAIN_COLUMNS
    ),
    Column("mac", String(64), nullable=False),
)


class AuditChainHead(SQLModel, table=True):
    """The one row that says where the chain ends. Sealing locks it, so chaining is serial."""

    __tablename__ = "audit_chain_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    hash: str = Field(sa_type=String(64))
    # the audit key the chain continues under (chain.key_id); NULL: not yet recorded
    key_id: str | None = Field(default=None, sa_type=String(16))


class BreakGlassGrant(SQLModel, table=True):
    """Time-boxed read access to a case outside the actor's scope, queued for the auditor."""

    __tablename__ = "break_glass_grant"
    __table_args__ = (CheckConstraint("verdict IN ('justified', 'unjustified')", name="verdict"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    case_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("case_file.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    reason_enc: str = Field(sa_type=Text)
    granted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reviewed_by: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=True),
    )
    verdict: str | None = Field(default=None, sa_type=String(16))
    review_note_enc: str | None = Field(default=None, sa_type=Text)
    version: int = Field(default=1)


VERIFICATION_STATUSES = ("running", "ok", "broken", "failed")


class AuditVerification(SQLModel, table=True):
    """One walk of the whole trail, asked for by an auditor and run by the server (ADR 0024).

    At most one runs at a time across every worker: the partial unique index lets one row be
    `running`. A running walk writes its heartbeat every few seconds; one whose heartbeat has
    stopped (its worker died) is ended as `failed` by the next request for a walk."""

    __tablename__ = "audit_verification"
    __table_args__ = job_constraints("audit_verification", VERIFICATION_STATUSES)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    requested_by: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=False)
    )
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    status: str = Field(default="running", sa_type=String(8))
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # events checked so far while running; all of them once finished
    checked: int = Field(default=0, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    unchained: int = Field(default=0, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    staged: int = Field(default=0, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    head_seq: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    head_hash: str | None = Field(default=None, sa_type=String(64))
    first_broken: int | None = Field(
        default=None, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    # why the trail does not hold, or why the walk could not finish; never personal data
    reason: str | None = Field(default=None, sa_type=Text)
    # a head the auditor kept outside the database, which the trail must still hold
    checkpoint_seq: int | None = Field(
        default=None, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    checkpoint_hash: str | None = Field(default=None, sa_type=String(64))
