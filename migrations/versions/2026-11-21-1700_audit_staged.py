"""audit events staged for the sealer (ADR 0014)

Revision ID: 9b3f0c6d2e15
Revises: 5c1d2e9a7b40
Create Date: 2026-11-21 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import referral.models.base

revision: str = "9b3f0c6d2e15"
down_revision: str | None = "5c1d2e9a7b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL = "audit_staged rows are never changed"


def upgrade() -> None:
    op.create_table(
        "audit_staged",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("occurred_at", referral.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_role", sa.String(length=32), nullable=True),
        sa.Column("actor_organisation_id", sa.Uuid(), nullable=True),
        sa.Column("actor_municipality_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=True),
        sa.Column("resource_ids", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_staged")),
    )
    # A staged event is inserted once and deleted once sealed; an UPDATE is never legitimate.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_staged_unchanged() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
            END $$
        """)
        op.execute("""
            CREATE TRIGGER audit_staged_no_update BEFORE UPDATE ON audit_staged
            FOR EACH ROW EXECUTE FUNCTION audit_staged_unchanged()
        """)
    else:
        op.execute(f"""
            CREATE TRIGGER audit_staged_no_update BEFORE UPDATE ON audit_staged
            BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
        """)


def downgrade() -> None:
    op.drop_table("audit_staged")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_staged_unchanged()")
