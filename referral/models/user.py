"""User accounts: one role, one organisation, one municipality (none for national roles)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, String, Uuid
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
    is_active: bool = Field(default=True)
    password_changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)
