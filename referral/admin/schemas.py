from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from referral.auth.schemas import StrictRequest, check_new_password
from referral.models.enums import Agency, Role

Region = Literal["Prishtina", "Mitrovica", "Peja", "Prizren", "Ferizaj", "Gjilan", "Gjakova"]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Code = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$")]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class MunicipalityCreate(StrictRequest):
    code: Code
    name: Name
    region: Region


class MunicipalityUpdate(StrictRequest):
    name: Name | None = None
    region: Region | None = None


class MunicipalityPublic(_Public):
    id: uuid.UUID
    code: str
    name: str
    region: str
    version: int


class OrganisationCreate(StrictRequest):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    agency: Agency
    municipality_id: uuid.UUID | None = None


class OrganisationUpdate(StrictRequest):
    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    is_active: bool | None = None


class OrganisationPublic(_Public):
    id: uuid.UUID
    name: str
    agency: str
    municipality_id: uuid.UUID | None
    is_active: bool
    version: int


class UserCreate(StrictRequest):
    username: Username
    display_name: Name
    role: Role
    organisation_id: uuid.UUID
    municipality_id: uuid.UUID | None = None
    password: str

    _check = field_validator("password")(check_new_password)


class UserUpdate(StrictRequest):
    display_name: Name | None = None
    role: Role | None = None
    organisation_id: uuid.UUID | None = None
    municipality_id: uuid.UUID | None = None
    is_active: bool | None = None


class PasswordReset(StrictRequest):
    new_password: str = Field(description="12 to 128 characters")

    _check = field_validator("new_password")(check_new_password)


class UserPublic(_Public):
    id: uuid.UUID
    username: str
    display_name: str
    role: str
    organisation_id: uuid.UUID
    municipality_id: uuid.UUID | None
    is_active: bool
    created_at: datetime
    version: int
