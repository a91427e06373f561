"""/api/v1/auth: sign in, refresh, sign out, change password, who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status
from fastapi.responses import JSONResponse

from referral import audit
from referral.auth import service
from referral.auth.passwords import MAX_LENGTH, MIN_LENGTH
from referral.auth.schemas import AccountPublic, PasswordChange, RefreshRequest, TokenPair
from referral.authz.dependencies import Access, authorize
from referral.db import SessionDep
from referral.errors import Forbidden, TooManyRequests, problem_response
from referral.models import User
from referral.routing import ProblemRoute

router = APIRouter(prefix="/auth", tags=["auth"], route_class=ProblemRoute)

_BAD_LOGIN = "The username or password is not correct."


def _pair(settings, pair: service.TokenPairData) -> TokenPair:
    return TokenPair(
        access_token=pair.access.token,
        expires_in=settings.access_token_minutes * 60,
        refresh_token=pair.refresh.token,
        refresh_expires_in=settings.refresh_token_hours * 3600,
    )


def _unauthorized(request: Request, detail: str) -> JSONResponse:
    return problem_response(
        401, instance=request.url.path, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


@router.post("/token", response_model=TokenPair, summary="Sign in (OAuth2 password form)")
async def sign_in(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=MIN_LENGTH, max_length=MAX_LENGTH)],
) -> TokenPair | JSONResponse:
    settings = request.app.state.settings
    outcome = await service.sign_in(session, settings, username, password)
    if isinstance(outcome, service.Locked):
        raise TooManyRequests(
            "Too many failed sign-ins for this account; try again later.",
            headers={"Retry-After": str(outcome.retry_after_seconds)},
        )
    if isinstance(outcome, service.Rejected):
        # Returned, not raised: the failure count must commit with this request.
        audit.record(
            session,
            request,
            action="auth.login",
            outcome="denied",
            resource_type="account",
            resource_ids=[outcome.user_id] if outcome.user_id else [],
            status_code=401,
            purpose=outcome.reason,
        )
        return _unauthorized(request, _BAD_LOGIN)
    audit.record(
        session,
        request,
        action="auth.login",
        resource_type="account",
        resource_ids=[outcome.user.id],
        purpose="sign_in",
    )
    return _pair(settings, outcome.tokens)


@router.post("/refresh", response_model=TokenPair, summary="Rotate a refresh token")
async def refresh(
    request: Request, session: SessionDep, body: RefreshRequest
) -> TokenPair | JSONResponse:
    settings = request.app.state.settings
    outcome = await service.refresh(session, settings, body.refresh_token)
    if isinstance(outcome, service.RefreshRefused):
        audit.record(
            session,
            request,
            action="auth.refresh",
            outcome="denied",
            resource_type="session",
            resource_ids=[i for i in (outcome.user_id, outcome.session_id) if i],
            status_code=401,
            purpose=outcome.reason,
        )
        return _unauthorized(request, "The refresh token is not valid; sign in again.")
    audit.record(
        session,
        request,
        action="auth.refresh",
        resource_type="session",
        resource_ids=[outcome.user_id, outcome.session_id],
    )
    return _pair(settings, outcome.tokens)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
async def logout(
    request: Request,
    session: SessionDep,
    access: Annotated[Access, Depends(authorize("account", "logout"))],
) -> Response:
    await service.revoke_session(session, access.actor.session_id, "logout")
    audit.record(
        session,
        request,
        action="auth.logout",
        resource_type="session",
        resource_ids=[access.actor.session_id],
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password (ends every session)",
)
async def change_password(
    request: Request,
    session: SessionDep,
    body: PasswordChange,
    access: Annotated[Access, Depends(authorize("account", "change_password"))],
) -> Response:
    if not await service.change_password(
        session, access.actor.user_id, body.current_password, body.new_password
    ):
        raise Forbidden("The current password is not correct.")
    audit.record(
        session,
        request,
        action="auth.password_change",
        resource_type="account",
        resource_ids=[access.actor.user_id],
        fields=["password_hash"],
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=AccountPublic, summary="Your own account")
async def me(
    session: SessionDep,
    access: Annotated[Access, Depends(authorize("account", "read"))],
) -> AccountPublic:
    user = access.visible(await session.get(User, access.actor.user_id))
    return AccountPublic(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        organisation_id=user.organisation_id,
        agency=access.actor.agency,
        municipality_id=user.municipality_id,
    )
