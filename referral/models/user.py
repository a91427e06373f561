"""User accounts: one role, one organisation, one municipality (none for national roles)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, String, Text, Uuid
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow, uuid7
from referral.models.enums import Role, sql_in


class User(SQLModel, table=True):
    __tablename__ = "user_account"
    __table_args__ = (CheckConstraint(f"role IN ({sql_in(Role)})", name="role"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    username: str = Field(sa_type=String(64), unique=True)
    display_name: str = Field(sa_type=String(128))
    role: str = Field(sa_type=String(32))
    organisation_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("organisation.id", ondelete="RESTRICT"), nullable=False, index=True
        )
    )
    municipality_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            Uuid, ForeignKey("municipality.id", ondelete="RESTRICT"), nullable=True, index=True
        ),
    )
    password_hash: str = Field(sa_type=String(255))
    # TOTP second factor: the secret sealed like case data; the last time step used, so a
    # code works once; enabled once the user confirmed a code from their authenticator.
    totp_secret_enc: str | None = Field(default=None, sa_type=Text)
    totp_enabled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    totp_last_step: int | None = Field(default=None, sa_type=BigInteger)
    is_active: bool = Field(default=True)
    password_changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)


class RecoveryCode(SQLModel, table=True):
    """A one-time recovery code for the second factor, stored only as a SHA-256 hash."""

    __tablename__ = "recovery_code"

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("user_account.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    code_hash: str = Field(sa_type=String(64))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
