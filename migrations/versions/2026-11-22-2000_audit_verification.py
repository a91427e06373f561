"""walks of the audit trail are runs the server keeps, not the work of one request

Revision ID: 8b2f4c6d1e07
Revises: 5c1e8a7d3f90
Create Date: 2026-11-22 20:00:00+00:00

An auditor asks for a walk, optionally against a head kept outside the database; the server
runs it and keeps its progress and result here. The partial unique index lets one walk run
at a time across every worker (ADR 0024).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from referral.models.base import UTCDateTime

revision: str = "8b2f4c6d1e07"
down_revision: str | None = "5c1e8a7d3f90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "audit_verification",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked", _BIG, nullable=False),
        sa.Column("unchained", _BIG, nullable=False),
        sa.Column("staged", _BIG, nullable=False),
        sa.Column("head_seq", _BIG, nullable=True),
        sa.Column("head_hash", sa.String(length=64), nullable=True),
        sa.Column("first_broken", _BIG, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("checkpoint_seq", _BIG, nullable=True),
        sa.Column("checkpoint_hash", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'ok', 'broken', 'failed')",
            name=op.f("ck_audit_verification_status"),
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"],
            ["user_account.id"],
            name=op.f("fk_audit_verification_requested_by_user_account"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_verification")),
    )
    op.create_index(
        op.f("ix_audit_verification_requested_at"), "audit_verification", ["requested_at"]
    )
    op.create_index(
        "uq_audit_verification_running",
        "audit_verification",
        ["status"],
        unique=True,
        postgresql_where=_RUNNING,
        sqlite_where=_RUNNING,
    )


def downgrade() -> None:
    op.drop_index("uq_audit_verification_running", table_name="audit_verification")
    op.drop_index(op.f("ix_audit_verification_requested_at"), table_name="audit_verification")
    op.drop_table("audit_verification")
