"""Published statistics: immutable snapshots of protected cells. Never a true small count."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Column,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    Uuid,
)
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, job_constraints, utcnow, uuid7


class StatsSnapshot(SQLModel, table=True):
    __tablename__ = "stats_snapshot"

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    as_of: date = Field(sa_type=Date)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=True),
    )
    policy_digest: str = Field(sa_type=String(64))
    cells: int
    suppressed: int


class StatsCell(SQLModel, table=True):
    __tablename__ = "stats_cell"
    __table_args__ = (
        Index("ix_stats_cell_lookup", "snapshot_id", "measure", "table_key", "period"),
    )

    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("stats_snapshot.id", ondelete="RESTRICT"), nullable=False)
    )
    measure: str = Field(sa_type=String(32))
    table_key: str = Field(sa_type=String(96))  # geography/period_level/dim+dim
    period: str = Field(sa_type=String(16))
    area: str = Field(sa_type=String(64))
    categories: list[str] = Field(default_factory=list, sa_type=JSON)
    value: int | None = Field(default=None)  # None: suppressed


BUILD_STATUSES = ("running", "published", "refused", "failed")


class StatsSnapshotBuild(SQLModel, table=True):
    """One build of a snapshot, asked for by a national analyst and run by the server
    (ADR 0026). At national scale a build takes about a minute, longer than a proxy waits.

    At most one runs at a time across every worker: the partial unique index lets one row be
    `running`. It ends `published` (with its snapshot), `refused` (the audit gate would
    have let a suppressed cell be derived: nothing published) or `failed` (it could not
    finish: its process died, or the server stopped)."""

    __tablename__ = "stats_snapshot_build"
    __table_args__ = job_constraints("stats_snapshot_build", BUILD_STATUSES)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    requested_by: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("user_account.id", ondelete="RESTRICT"), nullable=False)
    )
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    as_of: date = Field(sa_type=Date)
    status: str = Field(default="running", sa_type=String(9))
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    snapshot_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("stats_snapshot.id", ondelete="RESTRICT"), nullable=True),
    )
    # why nothing was published: the gate's refusal, or why the build could not finish
    reason: str | None = Field(default=None, sa_type=Text)
