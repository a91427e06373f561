"""cases

Revision ID: f38b1416f94e
Revises: 6c7c05d66281
Create Date: 2026-11-21 05:52:05.626528+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import referral.models.base  # noqa: F401 - UTCDateTime in column types


revision: str = 'f38b1416f94e'
down_revision: str | None = '6c7c05d66281'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('case_file',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('municipality_id', sa.Uuid(), nullable=False),
    sa.Column('referrer_user_id', sa.Uuid(), nullable=False),
    sa.Column('referrer_organisation_id', sa.Uuid(), nullable=False),
    sa.Column('referrer_sector', sa.String(length=32), nullable=False),
    sa.Column('primary_concern', sa.String(length=32), nullable=False),
    sa.Column('urgency', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('closure_outcome', sa.String(length=32), nullable=True),
    sa.Column('exit_reason', sa.String(length=32), nullable=True),
    sa.Column('subject_gender', sa.String(length=16), nullable=False),
    sa.Column('subject_age_band', sa.String(length=8), nullable=False),
    sa.Column('blind_index', sa.String(length=64), nullable=False),
    sa.Column('given_name_enc', sa.Text(), nullable=False),
    sa.Column('family_name_enc', sa.Text(), nullable=False),
    sa.Column('date_of_birth_enc', sa.Text(), nullable=False),
    sa.Column('address_enc', sa.Text(), nullable=True),
    sa.Column('contacts_enc', sa.Text(), nullable=True),
    sa.Column('guardian_enc', sa.Text(), nullable=True),
    sa.Column('languages_enc', sa.Text(), nullable=True),
    sa.Column('description_enc', sa.Text(), nullable=False),
    sa.Column('indicators_enc', sa.Text(), nullable=False),
    sa.Column('submitted_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('screening_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('assessment_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('panel_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('consent_pending_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('support_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('monitoring_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', referral.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("primary_concern IN ('far_right', 'religiously_motivated', 'far_left', 'ethno_nationalist', 'single_issue', 'mixed_or_unclear')", name=op.f('ck_case_file_primary_concern')),
    sa.CheckConstraint("referrer_sector IN ('police', 'social_services', 'education', 'health', 'faith', 'civil_society', 'municipality')", name=op.f('ck_case_file_referrer_sector')),
    sa.CheckConstraint("state IN ('submitted', 'screening', 'assessment', 'panel', 'consent_pending', 'support', 'monitoring', 'closed')", name=op.f('ck_case_file_state')),
    sa.CheckConstraint("subject_age_band IN ('0-14', '15-17', '18-24', '25+', 'unknown')", name=op.f('ck_case_file_subject_age_band')),
    sa.CheckConstraint("subject_gender IN ('female', 'male', 'other', 'unknown')", name=op.f('ck_case_file_subject_gender')),
    sa.CheckConstraint("urgency IN ('routine', 'priority', 'immediate')", name=op.f('ck_case_file_urgency')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipality.id'], name=op.f('fk_case_file_municipality_id_municipality'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['referrer_organisation_id'], ['organisation.id'], name=op.f('fk_case_file_referrer_organisation_id_organisation'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['referrer_user_id'], ['user_account.id'], name=op.f('fk_case_file_referrer_user_id_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_file'))
    )
    with op.batch_alter_table('case_file', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_file_blind_index'), ['blind_index'], unique=False)
        batch_op.create_index('ix_case_file_municipality_id_state', ['municipality_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_case_file_referrer_user_id'), ['referrer_user_id'], unique=False)

    op.create_table('idempotency_record',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_idempotency_record_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_record'))
    )
    op.create_table('panel_meeting',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('municipality_id', sa.Uuid(), nullable=False),
    sa.Column('meeting_date', sa.Date(), nullable=False),
    sa.Column('attendance', sa.JSON(), nullable=False),
    sa.Column('chair_user_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chair_user_id'], ['user_account.id'], name=op.f('fk_panel_meeting_chair_user_id_user_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipality.id'], name=op.f('fk_panel_meeting_municipality_id_municipality'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_panel_meeting'))
    )
    with op.batch_alter_table('panel_meeting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_panel_meeting_municipality_id'), ['municipality_id'], unique=False)

    op.create_table('case_assessment',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('section', sa.String(length=16), nullable=False),
    sa.Column('author_user_id', sa.Uuid(), nullable=False),
    sa.Column('author_agency', sa.String(length=32), nullable=False),
    sa.Column('factors_enc', sa.Text(), nullable=False),
    sa.Column('summary_enc', sa.Text(), nullable=True),
    sa.Column('assessed_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("section IN ('general', 'police', 'health', 'social', 'education', 'faith')", name=op.f('ck_case_assessment_section')),
    sa.ForeignKeyConstraint(['author_user_id'], ['user_account.id'], name=op.f('fk_case_assessment_author_user_id_user_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_assessment_case_id_case_file'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_assessment'))
    )
    with op.batch_alter_table('case_assessment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_assessment_case_id'), ['case_id'], unique=False)

    op.create_table('case_consent',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('given_by', sa.String(length=16), nullable=False),
    sa.Column('guardian_name_enc', sa.Text(), nullable=True),
    sa.Column('scope', sa.JSON(), nullable=False),
    sa.Column('given_on', sa.Date(), nullable=False),
    sa.Column('recorded_by', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_on', sa.Date(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("given_by IN ('subject', 'guardian')", name=op.f('ck_case_consent_given_by')),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_consent_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by'], ['user_account.id'], name=op.f('fk_case_consent_recorded_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_consent'))
    )
    with op.batch_alter_table('case_consent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_consent_case_id'), ['case_id'], unique=False)

    op.create_table('case_note',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('section', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('author_user_id', sa.Uuid(), nullable=False),
    sa.Column('author_agency', sa.String(length=32), nullable=False),
    sa.Column('body_enc', sa.Text(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("section IN ('general', 'police', 'health', 'social', 'education', 'faith')", name=op.f('ck_case_note_section')),
    sa.ForeignKeyConstraint(['author_user_id'], ['user_account.id'], name=op.f('fk_case_note_author_user_id_user_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_note_case_id_case_file'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_note'))
    )
    with op.batch_alter_table('case_note', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_note_case_id'), ['case_id'], unique=False)

    op.create_table('case_review',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('months_after_exit', sa.Integer(), nullable=True),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('done_on', sa.Date(), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('notes_enc', sa.Text(), nullable=True),
    sa.Column('recorded_by', sa.Uuid(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("kind IN ('plan', 'post_exit')", name=op.f('ck_case_review_kind')),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_review_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by'], ['user_account.id'], name=op.f('fk_case_review_recorded_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_review'))
    )
    with op.batch_alter_table('case_review', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_review_case_id'), ['case_id'], unique=False)
        batch_op.create_index('ix_case_review_open_due', ['done_on', 'due_on'], unique=False)

    op.create_table('case_screening',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('summary_enc', sa.Text(), nullable=False),
    sa.Column('rereferrals_reviewed', sa.Boolean(), nullable=False),
    sa.Column('recorded_by', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_screening_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by'], ['user_account.id'], name=op.f('fk_case_screening_recorded_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_screening')),
    sa.UniqueConstraint('case_id', name=op.f('uq_case_screening_case_id'))
    )
    with op.batch_alter_table('case_screening', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_screening_case_id'), ['case_id'], unique=False)

    op.create_table('case_transition',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=False),
    sa.Column('to_state', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('exit_reason', sa.String(length=32), nullable=True),
    sa.Column('immediate_risk', sa.Boolean(), nullable=False),
    sa.Column('reason_enc', sa.Text(), nullable=True),
    sa.Column('actor_user_id', sa.Uuid(), nullable=False),
    sa.Column('actor_role', sa.String(length=32), nullable=False),
    sa.Column('occurred_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['user_account.id'], name=op.f('fk_case_transition_actor_user_id_user_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_case_transition_case_id_case_file'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_transition'))
    )
    with op.batch_alter_table('case_transition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_case_transition_case_id'), ['case_id'], unique=False)

    op.create_table('intervention',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('outcome_enc', sa.Text(), nullable=True),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("agency IN ('police', 'social_services', 'education', 'health', 'faith', 'civil_society', 'municipality')", name=op.f('ck_intervention_agency')),
    sa.CheckConstraint("status IN ('planned', 'active', 'completed', 'stopped')", name=op.f('ck_intervention_status')),
    sa.CheckConstraint("type IN ('mentoring', 'psychosocial_support', 'education_or_training', 'job_training', 'family_support', 'religious_guidance', 'other')", name=op.f('ck_intervention_type')),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_intervention_case_id_case_file'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_intervention'))
    )
    with op.batch_alter_table('intervention', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_intervention_case_id'), ['case_id'], unique=False)

    op.create_table('panel_decision',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('meeting_id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('rationale_enc', sa.Text(), nullable=False),
    sa.Column('dissenting_agencies', sa.JSON(), nullable=False),
    sa.Column('dissent_enc', sa.Text(), nullable=True),
    sa.Column('recorded_by', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("decision IN ('adopt', 'not_adopted', 'signposted', 'referred_to_police')", name=op.f('ck_panel_decision_decision')),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_panel_decision_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['meeting_id'], ['panel_meeting.id'], name=op.f('fk_panel_decision_meeting_id_panel_meeting'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['recorded_by'], ['user_account.id'], name=op.f('fk_panel_decision_recorded_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_panel_decision'))
    )
    with op.batch_alter_table('panel_decision', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_panel_decision_case_id'), ['case_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_panel_decision_meeting_id'), ['meeting_id'], unique=False)

    op.create_table('support_plan',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_id', sa.Uuid(), nullable=False),
    sa.Column('goals_enc', sa.Text(), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=False),
    sa.Column('created_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', referral.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['case_file.id'], name=op.f('fk_support_plan_case_id_case_file'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['user_account.id'], name=op.f('fk_support_plan_created_by_user_account'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_support_plan')),
    sa.UniqueConstraint('case_id', name=op.f('uq_support_plan_case_id'))
    )
    with op.batch_alter_table('support_plan', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_support_plan_case_id'), ['case_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('support_plan', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_support_plan_case_id'))

    op.drop_table('support_plan')
    with op.batch_alter_table('panel_decision', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_panel_decision_meeting_id'))
        batch_op.drop_index(batch_op.f('ix_panel_decision_case_id'))

    op.drop_table('panel_decision')
    with op.batch_alter_table('intervention', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_intervention_case_id'))

    op.drop_table('intervention')
    with op.batch_alter_table('case_transition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_transition_case_id'))

    op.drop_table('case_transition')
    with op.batch_alter_table('case_screening', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_screening_case_id'))

    op.drop_table('case_screening')
    with op.batch_alter_table('case_review', schema=None) as batch_op:
        batch_op.drop_index('ix_case_review_open_due')
        batch_op.drop_index(batch_op.f('ix_case_review_case_id'))

    op.drop_table('case_review')
    with op.batch_alter_table('case_note', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_note_case_id'))

    op.drop_table('case_note')
    with op.batch_alter_table('case_consent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_consent_case_id'))

    op.drop_table('case_consent')
    with op.batch_alter_table('case_assessment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_assessment_case_id'))

    op.drop_table('case_assessment')
    with op.batch_alter_table('panel_meeting', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_panel_meeting_municipality_id'))

    op.drop_table('panel_meeting')
    op.drop_table('idempotency_record')
    with op.batch_alter_table('case_file', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_case_file_referrer_user_id'))
        batch_op.drop_index('ix_case_file_municipality_id_state')
        batch_op.drop_index(batch_op.f('ix_case_file_blind_index'))

    op.drop_table('case_file')

