"""Every table model, imported here so Alembic and the app see one complete metadata."""

from referral.models.audit import AuditEvent
from referral.models.auth import AuthSession, LoginThrottle, RefreshToken
from referral.models.base import metadata
from referral.models.directory import Municipality, Organisation
from referral.models.user import User

__all__ = [
    "AuditEvent",
    "AuthSession",
    "LoginThrottle",
    "Municipality",
    "Organisation",
    "RefreshToken",
    "User",
    "metadata",
]
