"""The current actor, from the bearer token: one query for user, organisation and session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import select

from referral.auth import tokens
from referral.authz.actor import Actor
from referral.db import SessionDep
from referral.errors import Unauthorized
from referral.models import AuthSession, Organisation, User
from referral.models.base import utcnow

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def current_actor(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Actor:
    if not token:
        raise Unauthorized("A bearer token is required.")
    try:
        claims = tokens.decode(request.app.state.settings, token, expected_type=tokens.ACCESS)
    except tokens.InvalidToken as exc:
        request.state.auth_failure = str(exc)
        raise Unauthorized("The token is not valid.") from exc

    row = (
        await session.exec(
            select(User, Organisation.agency, Organisation.is_active, AuthSession)
            .join(Organisation, Organisation.id == User.organisation_id)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.subject, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        raise Unauthorized("The token is not valid.")
    user, agency, organisation_active, auth_session = row
    if (
        not user.is_active
        or not organisation_active
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= utcnow()
    ):
        raise Unauthorized("The session has ended; sign in again.")

    actor = Actor(
        user_id=user.id,
        username=user.username,
        role=user.role,
        organisation_id=user.organisation_id,
        agency=agency,
        municipality_id=user.municipality_id,
        session_id=auth_session.id,
    )
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
