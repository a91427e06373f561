"""retention

Revision ID: 242761074cc0
Revises: 7876dd54654c
Create Date: 2026-11-21 07:00:25.976666+00:00
"""

from collections.abc import Sequence

import uuid

import sqlalchemy as sa
from alembic import op

import referral.models.base  # noqa: F401 - UTCDateTime in column types


revision: str = '242761074cc0'
down_revision: str | None = '7876dd54654c'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('case_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stat_person', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('legal_hold_at', referral.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('legal_hold_by', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('legal_hold_reason_enc', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('purged_at', referral.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('blind_index',
               existing_type=sa.VARCHAR(length=64),
               nullable=True)
        batch_op.alter_column('given_name_enc',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.alter_column('family_name_enc',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.alter_column('date_of_birth_enc',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.alter_column('description_enc',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.alter_column('indicators_enc',
               existing_type=sa.TEXT(),
               nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_case_file_legal_hold_by_user_account'), 'user_account', ['legal_hold_by'], ['id'], ondelete='RESTRICT')

    # one random statistical id per person (cases sharing a blind index share it)
    bind = op.get_bind()
    case_file = sa.table("case_file", sa.column("blind_index", sa.String),
                         sa.column("stat_person", sa.Uuid))
    for (blind,) in bind.execute(sa.select(case_file.c.blind_index).distinct()).all():
        bind.execute(case_file.update().where(case_file.c.blind_index == blind)
                     .values(stat_person=uuid.uuid4()))
    with op.batch_alter_table('case_file', schema=None) as batch_op:
        batch_op.alter_column('stat_person', existing_type=sa.Uuid(), nullable=False)



def downgrade() -> None:
    with op.batch_alter_table('case_file', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_case_file_legal_hold_by_user_account'), type_='foreignkey')
        batch_op.alter_column('indicators_enc',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.alter_column('description_enc',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.alter_column('date_of_birth_enc',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.alter_column('family_name_enc',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.alter_column('given_name_enc',
               existing_type=sa.TEXT(),
               nullable=False)
        batch_op.alter_column('blind_index',
               existing_type=sa.VARCHAR(length=64),
               nullable=False)
        batch_op.drop_column('purged_at')
        batch_op.drop_column('legal_hold_reason_enc')
        batch_op.drop_column('legal_hold_by')
        batch_op.drop_column('legal_hold_at')
        batch_op.drop_column('stat_person')

