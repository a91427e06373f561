"""case list indexes in keyset order

Revision ID: 5c1d2e9a7b40
Revises: 7e8f73312822
Create Date: 2026-11-21 11:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5c1d2e9a7b40"
down_revision: str | None = "7e8f73312822"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_file", schema=None) as batch_op:
        batch_op.create_index(
            "ix_case_file_municipality_id_id", ["municipality_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_case_file_referrer_user_id_id", ["referrer_user_id", "id"], unique=False
        )
        batch_op.drop_index("ix_case_file_referrer_user_id")


def downgrade() -> None:
    with op.batch_alter_table("case_file", schema=None) as batch_op:
        batch_op.create_index("ix_case_file_referrer_user_id", ["referrer_user_id"], unique=False)
        batch_op.drop_index("ix_case_file_referrer_user_id_id")
        batch_op.drop_index("ix_case_file_municipality_id_id")
