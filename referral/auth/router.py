"""/api/v1/auth: sign in, refresh, sign out, change password, who am I."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status
from fastapi.responses import JSONResponse

from referral import audit
from referral.auth import service, tokens, totp
from referral.auth.passwords import MAX_LENGTH, MIN_LENGTH
from referral.auth.schemas import (
    AccountPublic,
    CodeIn,
    PasswordChange,
    RefreshRequest,
    TokenPair,
)
from referral.authz.dependencies import Access, authorize
from referral.db import SessionDep
from referral.errors import Forbidden, TooManyRequests, Unauthorized, problem_response
from referral.models import AuthSession, RecoveryCode, User
from referral.models.base import utcnow
from referral.routing import API_PREFIX, ProblemRoute

router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], route_class=ProblemRoute)

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
    totp_code: Annotated[str | None, Form(max_length=8)] = None,
    recovery_code: Annotated[str | None, Form(max_length=20)] = None,
) -> TokenPair | JSONResponse:
    settings = request.app.state.settings
    # a refusal raised on the way (a lockout, no turn at the hasher) is recorded as a sign-in
    request.state.audit_action = "auth.login"
    second_factor = service.SecondFactor(
        ring=request.app.state.case_keys.ring,
        required_roles=frozenset(request.app.state.access_policy.second_factor.required_for),
        totp_code=totp_code,
        recovery_code=recovery_code,
    )
    outcome = await service.sign_in(session, settings, username, password, second_factor)
    if isinstance(outcome, service.EnrolmentRequired):
        _login_denied(session, request, outcome.user.id, 403, "second_factor_enrolment")
        return problem_response(
            403,
            instance=request.url.path,
            slug="second-factor-enrolment-required",
            title="Second factor enrolment required",
            detail="Your role needs a second factor. Use enrolment_token with "
            "/api/v1/auth/second-factor/enrolment, then confirm a code.",
            extra={"enrolment_token": outcome.token.token, "expires_in": 600},
        )
    if isinstance(outcome, service.SecondFactorRequired):
        _login_denied(session, request, outcome.user_id, 401, "second_factor_missing")
        return problem_response(
            401,
            instance=request.url.path,
            slug="second-factor-required",
            title="Second factor required",
            detail="Send totp_code (or a recovery_code) with your password.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if isinstance(outcome, service.Locked):
        raise TooManyRequests(
            "Too many failed sign-ins for this account; try again later.",
            headers={"Retry-After": str(outcome.retry_after_seconds)},
        )
    if isinstance(outcome, service.Rejected):
        # Returned, not raised: the failure count must commit with this request.
        _login_denied(session, request, outcome.user_id, 401, outcome.reason)
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


def _login_denied(
    session, request: Request, user_id: uuid.UUID | None, status_code: int, reason: str
) -> None:
    """A refused sign-in, audited in the request's own transaction (it commits, with the
    failure count, because the refusal is returned rather than raised)."""
    audit.record(
        session,
        request,
        action="auth.login",
        outcome="denied",
        resource_type="account",
        resource_ids=[user_id] if user_id else [],
        status_code=status_code,
        purpose=reason,
    )


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


# --- second factor enrolment (authenticated by the enrolment token, not an access token) ---


async def _enrolling_user(request: Request, session) -> User:
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    try:
        claims = tokens.decode(request.app.state.settings, token, expected_type=tokens.ENROL)
    except tokens.InvalidToken as exc:
        raise Unauthorized("An enrolment token from sign-in is required.") from exc
    user = await session.get(User, claims.subject)
    if user is None or not user.is_active or user.totp_enabled_at is not None:
        raise Unauthorized("The enrolment token is not valid.")
    return user


@router.post("/second-factor/enrolment", summary="Start enrolling an authenticator app")
async def start_enrolment(request: Request, session: SessionDep) -> dict:
    user = await _enrolling_user(request, session)
    secret = totp.new_secret()
    totp.seal_secret(request.app.state.case_keys.ring, user, secret)
    session.add(user)
    audit.record(
        session,
        request,
        action="auth.second_factor_start",
        resource_type="account",
        resource_ids=[user.id],
        actor=None,
        fields=["totp_secret"],
    )
    issuer = request.app.state.access_policy.second_factor.issuer
    return {
        "secret": secret,
        "provisioning_uri": totp.provisioning_uri(secret, user.username, issuer),
    }


@router.post("/second-factor/confirm", summary="Confirm a code: enables the second factor")
async def confirm_enrolment(request: Request, session: SessionDep, body: CodeIn) -> dict:
    user = await _enrolling_user(request, session)
    secret = totp.secret_of(request.app.state.case_keys.ring, user)
    step = totp.matching_step(secret, body.code, None) if secret else None
    if step is None:
        raise Forbidden("That code does not match the authenticator's secret.")
    codes = totp.new_recovery_codes()
    user.totp_enabled_at = utcnow()
    user.totp_last_step = step
    session.add(user)
    session.add_all([RecoveryCode(user_id=user.id, code_hash=totp.recovery_hash(c)) for c in codes])
    settings = request.app.state.settings
    auth_session = AuthSession(
        user_id=user.id, expires_at=utcnow() + timedelta(hours=settings.refresh_token_hours)
    )
    session.add(auth_session)
    await session.flush()
    pair = await service.issue_pair(session, settings, user.id, auth_session.id)
    audit.record(
        session,
        request,
        action="auth.second_factor_enabled",
        resource_type="account",
        resource_ids=[user.id],
        fields=["totp_enabled_at", "recovery_codes"],
    )
    return {"recovery_codes": codes, **_pair(settings, pair).model_dump()}
