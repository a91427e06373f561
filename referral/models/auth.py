"""Sign-in state: sessions (refresh-token families), refresh tokens, login throttling."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, String, Uuid
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow, uuid7


class AuthSession(SQLModel, table=True):
    """One sign-in: the family of refresh tokens it rotates through.

    Access tokens name their session (`sid`); revoking the session ends every token of it.
    """

    __tablename__ = "auth_session"

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_reason: str | None = Field(default=None, sa_type=String(32))


class RefreshToken(SQLModel, table=True):
    """A refresh token, stored only as a hash. Used once; reuse revokes its session."""

    __tablename__ = "refresh_token"

    jti: uuid.UUID = Field(sa_type=Uuid, primary_key=True)
    session_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("auth_session.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    token_hash: str = Field(sa_type=String(64))
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LoginThrottle(SQLModel, table=True):
    """Failed sign-ins per account name, known or not, so lock-out reveals no account."""

    __tablename__ = "login_throttle"

    key: str = Field(sa_type=String(64), primary_key=True)
    failures: int = Field(default=0)
    last_failure_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
