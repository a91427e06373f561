"""statistics

Revision ID: 7876dd54654c
Revises: 8666a3e578a3
Create Date: 2026-11-21 06:40:21.794895+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import referral.models.base  # noqa: F401 - UTCDateTime in column types


revision: str = '7876dd54654c'
down_revision: str | None = '8666a3e578a3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('stats_snapshot',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('policy_digest', sa.String(length=64), nullable=False),
    sa.Column('cells', sa.Integer(), nullable=False),
    sa.Column('suppressed', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['user_account.id'], name=op.f('fk_stats_snapshot_created_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stats_snapshot'))
    )
    op.create_table('stats_cell',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('snapshot_id', sa.Uuid(), nullable=False),
    sa.Column('measure', sa.String(length=32), nullable=False),
    sa.Column('table_key', sa.String(length=96), nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['snapshot_id'], ['stats_snapshot.id'], name=op.f('fk_stats_cell_snapshot_id_stats_snapshot'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stats_cell'))
    )
    with op.batch_alter_table('stats_cell', schema=None) as batch_op:
        batch_op.create_index('ix_stats_cell_lookup', ['snapshot_id', 'measure', 'table_key', 'period'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('stats_cell', schema=None) as batch_op:
        batch_op.drop_index('ix_stats_cell_lookup')

    op.drop_table('stats_cell')
    op.drop_table('stats_snapshot')

