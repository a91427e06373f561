"""Sign-in, refresh rotation with reuse detection, revocation, lock-out with back-off."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.auth import passwords, tokens, totp
from referral.config import Settings
from referral.crypto import KeyRing
from referral.models import (
    AuthSession,
    LoginThrottle,
    Organisation,
    RecoveryCode,
    RefreshToken,
    User,
)
from referral.models.base import utcnow, uuid7


def normalise_username(username: str) -> str:
    return username.strip().lower()


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    tokens: TokenPairData


@dataclass(frozen=True, slots=True)
class TokenPairData:
    access: tokens.IssuedToken
    refresh: tokens.IssuedToken


@dataclass(frozen=True, slots=True)
class Rejected:
    user_id: uuid.UUID | None
    reason: str


@dataclass(frozen=True, slots=True)
class EnrolmentRequired:
    """Password right, but the role needs a second factor the account has not enrolled."""

    user: User
    token: tokens.IssuedToken


@dataclass(frozen=True, slots=True)
class SecondFactorRequired:
    user_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Locked:
    user_id: uuid.UUID | None
    retry_after_seconds: int


def _throttle_key(username: str) -> str:
    return hashlib.sha256(username.encode()).hexdigest()


async def _locked_for(session: AsyncSession, key: str) -> int:
    throttle = await session.get(LoginThrottle, key)
    if throttle is None or throttle.locked_until is None:
        return 0
    remaining = (throttle.locked_until - utcnow()).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


async def _count_failure(session: AsyncSession, settings: Settings, key: str) -> None:
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = LoginThrottle.__table__
    stmt = insert(table).values(key=key, failures=1, last_failure_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={"failures": table.c.failures + 1, "last_failure_at": now},
    ).returning(table.c.failures)
    failures = (await session.exec(stmt)).scalar_one()
    if failures >= settings.login_max_failures:
        step = failures - settings.login_max_failures
        delay = min(
            settings.login_backoff_base_seconds * (2 ** min(step, 20)),
            settings.login_backoff_max_seconds,
        )
        await session.exec(
            update(table)
            .where(table.c.key == key)
            .values(locked_until=now + timedelta(seconds=delay))
        )


async def sign_in(
    session: AsyncSession,
    settings: Settings,
    username: str,
    password: str,
    second_factor: SecondFactor | None = None,
) -> SignedIn | Rejected | Locked | EnrolmentRequired | SecondFactorRequired:
    username = normalise_username(username)
    key = _throttle_key(username)
    # The turn comes before the first statement: the request's connection is taken then,
    # so a sign-in queued for the hasher holds none (passwords.turn).
    async with passwords.turn():
        user = (
            await session.exec(
                select(User)
                .join(Organisation, Organisation.id == User.organisation_id)
                .where(User.username == username, col(Organisation.is_active))
            )
        ).first()
        user_id = user.id if user else None

        retry_after = await _locked_for(session, key)
        if retry_after:
            return Locked(user_id, retry_after)

        ok = await passwords.verify_password(password, user.password_hash if user else None)
    if not ok or user is None or not user.is_active:
        await _count_failure(session, settings, key)
        reason = "inactive_account" if ok and user is not None else "bad_credentials"
        return Rejected(user_id, reason)

    if second_factor is not None:
        check = await second_factor.check(session, user)
        if check == "enrol":
            return EnrolmentRequired(
                user,
                tokens.issue(
                    settings, subject=user.id, session_id=uuid7(), token_type=tokens.ENROL
                ),
            )
        if check == "missing":
            return SecondFactorRequired(user.id)
        if check == "wrong":
            await _count_failure(session, settings, key)
            return Rejected(user.id, "bad_second_factor")

    throttle = await session.get(LoginThrottle, key)
    if throttle is not None:
        await session.delete(throttle)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash_password(password)
        session.add(user)

    auth_session = AuthSession(
        user_id=user.id, expires_at=utcnow() + timedelta(hours=settings.refresh_token_hours)
    )
    session.add(auth_session)
    await session.flush()
    pair = await issue_pair(session, settings, user.id, auth_session.id)
    return SignedIn(user, pair)


async def issue_pair(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, session_id: uuid.UUID
) -> TokenPairData:
    access = tokens.issue(
        settings, subject=user_id, session_id=session_id, token_type=tokens.ACCESS
    )
    refresh = tokens.issue(
        settings, subject=user_id, session_id=session_id, token_type=tokens.REFRESH
    )
    session.add(
        RefreshToken(
            jti=refresh.token_id,
            session_id=session_id,
            token_hash=tokens.fingerprint(refresh.token),
            expires_at=refresh.expires_at,
        )
    )
    await session.flush()
    return TokenPairData(access, refresh)


@dataclass
class SecondFactor:
    """What the sign-in form brought for the second factor, and the rules that apply."""

    ring: KeyRing
    required_roles: frozenset[str]
    totp_code: str | None = None
    recovery_code: str | None = None

    async def check(self, session: AsyncSession, user: User) -> str:
        """ok | enrol | missing | wrong. Marks a used code or recovery code as spent."""
        if user.totp_enabled_at is None:
            return "enrol" if user.role in self.required_roles else "ok"
        if self.recovery_code:
            spent = (
                await session.exec(
                    select(RecoveryCode).where(
                        RecoveryCode.user_id == user.id,
                        RecoveryCode.code_hash == totp.recovery_hash(self.recovery_code),
                        col(RecoveryCode.used_at).is_(None),
                    )
                )
            ).first()
            if spent is None:
                return "wrong"
            spent.used_at = utcnow()
            session.add(spent)
            return "ok"
        if not self.totp_code:
            return "missing"
        secret = totp.secret_of(self.ring, user)
        step = totp.matching_step(secret, self.totp_code, user.totp_last_step) if secret else None
        if step is None:
            return "wrong"
        # conditional: of two sign-ins racing with one code, only one moves the step
        moved = await session.exec(
            update(User)
            .where(
                col(User.id) == user.id,
                (col(User.totp_last_step).is_(None)) | (col(User.totp_last_step) < step),
            )
            .values(totp_last_step=step)
        )
        return "ok" if moved.rowcount == 1 else "wrong"


@dataclass(frozen=True, slots=True)
class Refreshed:
    user_id: uuid.UUID
    session_id: uuid.UUID
    tokens: TokenPairData


@dataclass(frozen=True, slots=True)
class RefreshRefused:
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None
    reason: str


async def refresh(
    session: AsyncSession, settings: Settings, token: str
) -> Refreshed | RefreshRefused:
    try:
        claims = tokens.decode(settings, token, expected_type=tokens.REFRESH)
    except tokens.InvalidToken:
        return RefreshRefused(None, None, "invalid_token")

    now = utcnow()
    fingerprint = tokens.fingerprint(token)
    # Atomic claim of the token: of two concurrent refreshes with it, exactly one wins.
    claimed = await session.exec(
        update(RefreshToken)
        .where(
            col(RefreshToken.jti) == claims.token_id,
            col(RefreshToken.session_id) == claims.session_id,
            col(RefreshToken.token_hash) == fingerprint,
            col(RefreshToken.used_at).is_(None),
        )
        .values(used_at=now)
    )
    if claimed.rowcount != 1:
        known = await session.get(RefreshToken, claims.token_id)
        if known is not None and known.token_hash == fingerprint:
            # A used token came back: it was stolen or replayed. End the whole family.
            await revoke_session(session, claims.session_id, "refresh_reuse")
            return RefreshRefused(claims.subject, claims.session_id, "refresh_reuse")
        return RefreshRefused(claims.subject, claims.session_id, "unknown_token")

    row = (
        await session.exec(
            select(User, AuthSession, Organisation.is_active)
            .join(AuthSession, AuthSession.user_id == User.id)
            .join(Organisation, Organisation.id == User.organisation_id)
            .where(AuthSession.id == claims.session_id, User.id == claims.subject)
        )
    ).first()
    if row is None:
        return RefreshRefused(claims.subject, claims.session_id, "unknown_session")
    user, auth_session, organisation_active = row
    if (
        not user.is_active
        or not organisation_active
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= now
    ):
        return RefreshRefused(user.id, auth_session.id, "session_ended")
    pair = await issue_pair(session, settings, user.id, auth_session.id)
    return Refreshed(user.id, auth_session.id, pair)


async def revoke_session(session: AsyncSession, session_id: uuid.UUID, reason: str) -> None:
    await session.exec(
        update(AuthSession)
        .where(col(AuthSession.id) == session_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


async def revoke_all_sessions(session: AsyncSession, user_id: uuid.UUID, reason: str) -> int:
    result = await session.exec(
        update(AuthSession)
        .where(col(AuthSession.user_id) == user_id, col(AuthSession.revoked_at).is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    return result.rowcount or 0


async def change_password(
    session: AsyncSession, user_id: uuid.UUID, current: str, new: str
) -> bool:
    user = await session.get(User, user_id)
    if user is None or not await passwords.verify_password(current, user.password_hash):
        return False
    await set_password(session, user, new, reason="password_change")
    return True


async def set_password(session: AsyncSession, user: User, new: str, *, reason: str) -> None:
    user.password_hash = await passwords.hash_password(new)
    now = utcnow()
    user.password_changed_at = now
    user.updated_at = now
    user.version += 1
    session.add(user)
    await session.flush()
    await revoke_all_sessions(session, user.id, reason)
