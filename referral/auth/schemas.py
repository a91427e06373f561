from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator

from referral.auth.passwords import MAX_LENGTH, password_problem


class StrictRequest(BaseModel):
    """Base for every request body: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def check_new_password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        raise ValueError(f"password {problem}")
    return value


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class RefreshRequest(StrictRequest):
    refresh_token: str = Field(min_length=1, max_length=4096)


class PasswordChange(StrictRequest):
    current_password: str = Field(min_length=1, max_length=MAX_LENGTH)
    new_password: str

    _check = field_validator("new_password")(check_new_password)


class AccountPublic(BaseModel):
    id: uuid.UUID
    username: str
    display_name: str
    role: str
    organisation_id: uuid.UUID
    agency: str
    municipality_id: uuid.UUID | None


class CodeIn(StrictRequest):
    code: str = Field(min_length=6, max_length=8)
