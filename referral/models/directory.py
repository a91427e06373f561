"""Municipalities and organisations: who works where."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, ForeignKey, String, Uuid
from sqlmodel import Field, SQLModel

from referral.models.base import UTCDateTime, utcnow, uuid7
from referral.models.enums import REGIONS, Agency, sql_in


class Municipality(SQLModel, table=True):
    __tablename__ = "municipality"
    __table_args__ = (CheckConstraint(f"region IN ({sql_in(REGIONS)})", name="region"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    code: str = Field(sa_type=String(64), unique=True)
    name: str = Field(sa_type=String(128))
    region: str = Field(sa_type=String(32), index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)


class Organisation(SQLModel, table=True):
    __tablename__ = "organisation"
    __table_args__ = (CheckConstraint(f"agency IN ({sql_in(Agency)})", name="agency"),)

    id: uuid.UUID = Field(default_factory=uuid7, sa_type=Uuid, primary_key=True)
    name: str = Field(sa_type=String(200))
    agency: str = Field(sa_type=String(32))
    municipality_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            Uuid, ForeignKey("municipality.id", ondelete="RESTRICT"), nullable=True, index=True
        ),
    )
    is_active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    version: int = Field(default=1)
