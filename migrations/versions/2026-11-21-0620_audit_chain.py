"""audit chain and break glass

Revision ID: 8666a3e578a3
Revises: f38b1416f94e
Create Date: 2026-11-21 06:20:16.800501+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import referral.models.base  # noqa: F401 - UTCDateTime in column types


revision: str = '8666a3e578a3'
down_revision: str | None = 'f38b1416f94e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.create_table('break_glass_grant',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('reason_enc', sa.Text(), nullable=False),
    sa.Column('granted_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reviewed_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reviewed_by', sa.Uuid(), nullable=True),
    sa.Column('verdict', sa.String(length=16), nullable=True),
    sa.Column('review_note_enc', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("verdict IN ('justified', 'unjustified')", name=op.f('ck_break_glass_grant_verdict')),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_break_glass_grant_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reviewed_by'], ['user_account.id'], name=op.f('fk_break_glass_grant_reviewed_by_user_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_break_glass_grant_user_id_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_break_glass_grant'))
    )
    with op.batch_alter_table('break_glass_grant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_break_glass_grant_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_grant_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_break_glass_grant_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))

    # The chain starts after any events written before it existed (development databases);
    # `referral audit verify` reports those as unchained.
    op.execute(
        sa.text(
            "INSERT INTO audit_chain_head (id, seq, hash) "
            "SELECT 1, COALESCE(MAX(seq), 0), :genesis FROM audit_event"
        ).bindparams(genesis=GENESIS)
    )
    install_append_only()


GENESIS = "0" * 64
REFUSAL = "audit_event is append-only"


def install_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION audit_event_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
            END $$
        """)
        op.execute("""
            CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event
            FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()
        """)
        op.execute("""
            CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
            FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()
        """)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"""
                CREATE TRIGGER audit_event_no_{event.lower()} BEFORE {event} ON audit_event
                BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
            """)


def remove_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update_delete ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")



def downgrade() -> None:
    remove_append_only()
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')

    with op.batch_alter_table('break_glass_grant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_break_glass_grant_user_id'))
        batch_op.drop_index(batch_op.f('ix_break_glass_grant_expires_at'))
        batch_op.drop_index(batch_op.f('ix_break_glass_grant_case_id'))

    op.drop_table('break_glass_grant')
    op.drop_table('audit_chain_head')
