"""The current actor, from the bearer token: one query for user, organisation and session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Uuid, bindparam
from sqlmodel import col, select

from referral.auth import tokens
from referral.authz.actor import Actor
from referral.db import SessionDep
from referral.errors import Unauthorized
from referral.models import AuthSession, Organisation, User
from referral.models.base import utcnow

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)

# Built once: every authenticated request runs it (ADR 0012).
_ACTOR = (
    select(
        User.id,
        User.username,
        User.role,
        User.organisation_id,
        User.municipality_id,
        col(User.is_active).label("user_active"),
        Organisation.agency,
        col(Organisation.is_active).label("organisation_active"),
        col(AuthSession.id).label("session_id"),
        AuthSession.revoked_at,
        AuthSession.expires_at,
    )
    .join(Organisation, col(Organisation.id) == User.organisation_id)
    .join(AuthSession, col(AuthSession.user_id) == User.id)
    .where(
        col(User.id) == bindparam("user_id", type_=Uuid),
        col(AuthSession.id) == bindparam("session_id", type_=Uuid),
    )
)


async def current_actor(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Actor:
    if not token:
        raise Unauthorized("A bearer token is required.")
    try:
        claims = request.app.state.verified_tokens.decode(token)
    except tokens.InvalidToken as exc:
        request.state.auth_failure = str(exc)
        raise Unauthorized("The token is not valid.") from exc

    connection = await session.connection()
    ids = {"user_id": claims.subject, "session_id": claims.session_id}
    row = (await connection.execute(_ACTOR, ids)).first()
    if row is None:
        raise Unauthorized("The token is not valid.")
    if (
        not row.user_active
        or not row.organisation_active
        or row.revoked_at is not None
        or row.expires_at <= utcnow()
    ):
        raise Unauthorized("The session has ended; sign in again.")

    actor = Actor(
        user_id=row.id,
        username=row.username,
        role=row.role,
        organisation_id=row.organisation_id,
        agency=row.agency,
        municipality_id=row.municipality_id,
        session_id=row.session_id,
    )
    request.state.actor = actor
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
