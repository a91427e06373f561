"""the chain head names the audit key it continues under

Revision ID: 5c1e8a7d3f90
Revises: 3d6a9e1f4b27
Create Date: 2026-11-22 17:00:00+00:00

So that a sealer deployed with a new audit key knows to write the marker event that moves
the chain to it, and one without that key knows to leave the events staged (ADR 0023).
NULL on an existing chain: the sealer finds the key by the head event's hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1e8a7d3f90"
down_revision: str | None = "3d6a9e1f4b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.drop_column("key_id")
