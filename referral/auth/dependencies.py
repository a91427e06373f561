"""The current actor, from the bearer token: one query for user, organisation and session."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import DateTime, String, Uuid, and_, bindparam, exists
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from referral.auth import tokens
from referral.authz.actor import Actor
from referral.db import SessionDep
from referral.errors import Unauthorized
from referral.models import AuthSession, Organisation, User
from referral.models.base import utcnow

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


def _session_in_force(now: Any) -> ColumnElement[bool]:
    """The one rule for a signed-in session: the user and their organisation are active, the
    session is neither revoked nor expired at `now`. Read by every authenticated request."""
    return and_(
        col(User.is_active).is_(True),
        col(Organisation.is_active).is_(True),
        col(AuthSession.revoked_at).is_(None),
        col(AuthSession.expires_at) > now,
    )


def _actor_of_session(*columns: Any) -> Any:
    return (
        select(*columns)
        .join(Organisation, col(Organisation.id) == User.organisation_id)
        .join(AuthSession, col(AuthSession.user_id) == User.id)
        .where(
            col(User.id) == bindparam("user_id", type_=Uuid),
            col(AuthSession.id) == bindparam("session_id", type_=Uuid),
        )
    )


# Built once: every authenticated request runs it (ADR 0012).
_ACTOR = _actor_of_session(
    User.id,
    User.username,
    User.role,
    User.organisation_id,
    User.municipality_id,
    Organisation.agency,
    col(AuthSession.id).label("session_id"),
    _session_in_force(bindparam("now", type_=DateTime(timezone=True))).label("in_force"),
)


def still_the_actor(actor: Actor) -> ColumnElement[bool]:
    """EXISTS: the session `:session_id` of user `:user_id` is in force at `:now` (the rule
    above), and the user still has the role, organisation, agency and municipality bound as
    `:actor_role`, `:actor_organisation_id`, `:actor_agency`, `:actor_municipality_id`
    (none, for a national actor). For a statement that acts for an actor remembered from an
    earlier request (`KnownActors`), and must not once the account has changed (ADR 0028).
    Its form depends on the actor only through `authz.scope_shape`, which keys the
    statements built with it."""
    municipality = col(User.municipality_id)
    same_place = (
        municipality.is_(None)
        if actor.municipality_id is None
        else municipality == bindparam("actor_municipality_id", type_=Uuid)
    )
    now = bindparam("now", type_=DateTime(timezone=True))
    return exists(
        _actor_of_session(User.id).where(
            _session_in_force(now),
            col(User.role) == bindparam("actor_role", type_=String),
            col(User.organisation_id) == bindparam("actor_organisation_id", type_=Uuid),
            col(Organisation.agency) == bindparam("actor_agency", type_=String),
            same_place,
        )
    )


def actor_params(actor: Actor) -> dict[str, Any]:
    """The values of `still_the_actor` for `actor`, at this moment."""
    return {
        "user_id": actor.user_id,
        "session_id": actor.session_id,
        "now": utcnow(),
        "actor_role": actor.role,
        "actor_organisation_id": actor.organisation_id,
        "actor_agency": actor.agency,
        "actor_municipality_id": actor.municipality_id,
    }


class KnownActors:
    """The actors this worker has authenticated, by session, the least recently used
    forgotten first. Never a decision: a statement that acts for a remembered actor checks
    in the database, as it runs, that the session is in force and the account unchanged
    (`still_the_actor`), and does nothing otherwise."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._actors: OrderedDict[uuid.UUID, Actor] = OrderedDict()

    def remember(self, actor: Actor) -> None:
        self._actors[actor.session_id] = actor
        self._actors.move_to_end(actor.session_id)
        if len(self._actors) > self._size:
            self._actors.popitem(last=False)

    def of(self, claims: tokens.TokenClaims) -> Actor | None:
        actor = self._actors.get(claims.session_id)
        if actor is None or actor.user_id != claims.subject:
            return None
        self._actors.move_to_end(claims.session_id)
        return actor


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
    ids = {"user_id": claims.subject, "session_id": claims.session_id, "now": utcnow()}
    row = (await connection.execute(_ACTOR, ids)).first()
    if row is None:
        raise Unauthorized("The token is not valid.")
    if not row.in_force:
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
    request.app.state.known_actors.remember(actor)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]
