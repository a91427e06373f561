"""Every table model, imported here so Alembic and the app see one complete metadata."""

from referral.models.audit import (
    AuditChainHead,
    AuditEvent,
    AuditVerification,
    BreakGlassGrant,
    audit_staged,
)
from referral.models.auth import AuthSession, LoginThrottle, RefreshToken
from referral.models.base import metadata
from referral.models.case import (
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    CaseTransition,
    IdempotencyRecord,
    Intervention,
    SupportPlan,
)
from referral.models.directory import Municipality, Organisation
from referral.models.panel import PanelDecision, PanelMeeting
from referral.models.stats import StatsCell, StatsSnapshot, StatsSnapshotBuild
from referral.models.user import RecoveryCode, User

__all__ = [
    "AuditChainHead",
    "AuditEvent",
    "AuditVerification",
    "AuthSession",
    "BreakGlassGrant",
    "CaseAssessment",
    "CaseConsent",
    "CaseFile",
    "CaseNote",
    "CaseReview",
    "CaseScreening",
    "CaseTransition",
    "IdempotencyRecord",
    "Intervention",
    "LoginThrottle",
    "Municipality",
    "Organisation",
    "PanelDecision",
    "PanelMeeting",
    "RecoveryCode",
    "RefreshToken",
    "StatsCell",
    "StatsSnapshot",
    "StatsSnapshotBuild",
    "SupportPlan",
    "User",
    "audit_staged",
    "metadata",
]
