"""platform: directory, accounts, sessions, audit

Revision ID: 6c7c05d66281
Revises: 
Create Date: 2026-11-21 05:39:36.233346+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import referral.models.base  # noqa: F401 - UTCDateTime in column types


revision: str = '6c7c05d66281'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('audit_event',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('occurred_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor_user_id', sa.Uuid(), nullable=True),
    sa.Column('actor_role', sa.String(length=32), nullable=True),
    sa.Column('actor_organisation_id', sa.Uuid(), nullable=True),
    sa.Column('actor_municipality_id', sa.Uuid(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=True),
    sa.Column('resource_ids', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=8), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('purpose', sa.String(length=64), nullable=True),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.CheckConstraint("outcome IN ('allowed', 'denied', 'error')", name=op.f('ck_audit_event_outcome')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_event'))
    )
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_event_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_actor_user_id'), ['actor_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_event_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('login_throttle',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_failure_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('locked_until', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_login_throttle'))
    )
    op.create_table('municipality',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("region IN ('Prishtina', 'Mitrovica', 'Peja', 'Prizren', 'Ferizaj', 'Gjilan', 'Gjakova')", name=op.f('ck_municipality_region')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_municipality')),
    sa.UniqueConstraint('code', name=op.f('uq_municipality_code'))
    )
    with op.batch_alter_table('municipality', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_municipality_region'), ['region'], unique=False)

    op.create_table('organisation',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('municipality_id', sa.Uuid(), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("agency IN ('police', 'social_services', 'education', 'health', 'faith', 'civil_society', 'municipality')", name=op.f('ck_organisation_agency')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipality.id'], name=op.f('fk_organisation_municipality_id_municipality'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisation'))
    )
    with op.batch_alter_table('organisation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_organisation_municipality_id'), ['municipality_id'], unique=False)

    op.create_table('user_account',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('organisation_id', sa.Uuid(), nullable=False),
    sa.Column('municipality_id', sa.Uuid(), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('password_changed_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("role IN ('referrer', 'coordinator', 'panel_member', 'analyst', 'national_analyst', 'auditor', 'admin')", name=op.f('ck_user_account_role')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipality.id'], name=op.f('fk_user_account_municipality_id_municipality'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisation.id'], name=op.f('fk_user_account_organisation_id_organisation'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_account')),
    sa.UniqueConstraint('username', name=op.f('uq_user_account_username'))
    )
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_account_municipality_id'), ['municipality_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_user_account_organisation_id'), ['organisation_id'], unique=False)

    op.create_table('auth_session',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_auth_session_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_session'))
    )
    with op.batch_alter_table('auth_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_session_user_id'), ['user_id'], unique=False)

    op.create_table('refresh_token',
    sa.Column('jti', sa.Uuid(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('issued_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['auth_session.id'], name=op.f('fk_refresh_token_session_id_auth_session'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_refresh_token'))
    )
    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refresh_token_session_id'), ['session_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('refresh_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_token_session_id'))

    op.drop_table('refresh_token')
    with op.batch_alter_table('auth_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_session_user_id'))

    op.drop_table('auth_session')
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_account_organisation_id'))
        batch_op.drop_index(batch_op.f('ix_user_account_municipality_id'))

    op.drop_table('user_account')
    with op.batch_alter_table('organisation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_organisation_municipality_id'))

    op.drop_table('organisation')
    with op.batch_alter_table('municipality', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_municipality_region'))

    op.drop_table('municipality')
    op.drop_table('login_throttle')
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_audit_event_actor_user_id'))
        batch_op.drop_index(batch_op.f('ix_audit_event_action'))

    op.drop_table('audit_event')

