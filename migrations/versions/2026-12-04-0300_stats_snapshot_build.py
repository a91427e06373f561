"""snapshot builds are jobs the server runs and keeps, not the work of one request

Revision ID: 4e7c2a9b5d13
Revises: 8b2f4c6d1e07
Create Date: 2026-12-04 03:00:00+00:00

A national analyst asks for a snapshot; the server builds it and keeps how the build went
here. The partial unique index lets one build run at a time across every worker (ADR 0026).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from referral.models.base import UTCDateTime

revision: str = "4e7c2a9b5d13"
down_revision: str | None = "8b2f4c6d1e07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "stats_snapshot_build",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=9), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("snapshot_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'published', 'refused', 'failed')",
            name=op.f("ck_stats_snapshot_build_status"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["user_account.id"],
            name=op.f("fk_stats_snapshot_build_requested_by_user_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["stats_snapshot.id"],
            name=op.f("fk_stats_snapshot_build_snapshot_id_stats_snapshot"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stats_snapshot_build")),
    )
    op.create_index(
        op.f("ix_stats_snapshot_build_requested_at"), "stats_snapshot_build", ["requested_at"]
    )
    op.create_index(
        "uq_stats_snapshot_build_running",
        "stats_snapshot_build",
        ["status"],
        unique=True,
        postgresql_where=_RUNNING,
        sqlite_where=_RUNNING,
    )


def downgrade() -> None:
    op.drop_index("uq_stats_snapshot_build_running", table_name="stats_snapshot_build")
    op.drop_index(op.f("ix_stats_snapshot_build_requested_at"), table_name="stats_snapshot_build")
    op.drop_table("stats_snapshot_build")
