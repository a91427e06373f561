"""Access and refresh tokens: JWT, HS256 only, every registered claim required and checked.

python-jose accepts a token without `exp` or `aud` unless told otherwise, so this module
requires every claim itself and checks `typ`, rather than trusting library defaults.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jose import JWTError, jwt

from referral.config import Settings
from referral.models.base import utcnow, uuid7

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ")
ACCESS = "access"
REFRESH = "refresh"
ENROL = "enrol"  # good only for enrolling a second factor


class InvalidToken(Exception):
    """The token must not be honoured. The message is for logs, never for the client."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: uuid.UUID
    session_id: uuid.UUID
    token_id: uuid.UUID
    token_type: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: uuid.UUID
    expires_at: datetime


def issue(
    settings: Settings, *, subject: uuid.UUID, session_id: uuid.UUID, token_type: str
) -> IssuedToken:
    now = utcnow()
    lifetime = {
        ACCESS: timedelta(minutes=settings.access_token_minutes),
        ENROL: timedelta(minutes=10),
    }.get(token_type, timedelta(hours=settings.refresh_token_hours))
    expires_at = now + lifetime
    token_id = uuid7()
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(subject),
        "sid": str(session_id),
        "jti": str(token_id),
        "typ": token_type,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(claims, settings.jwt_key, algorithm=ALGORITHM)
    return IssuedToken(token=token, token_id=token_id, expires_at=expires_at)


def decode(settings: Settings, token: str, *, expected_type: str) -> TokenClaims:
    try:
        header = jwt.get_unverified_header(token)
    except JWTError as exc:
        raise InvalidToken("malformed header") from exc
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("algorithm not allowed")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_key,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={f"require_{claim}": True for claim in REQUIRED_CLAIMS if claim != "typ"}
            | {"verify_at_hash": False, "leeway": 0},
        )
    except JWTError as exc:
        raise InvalidToken(str(exc)) from exc
    missing = [claim for claim in (*REQUIRED_CLAIMS, "sid") if claim not in claims]
    if missing:
        raise InvalidToken(f"missing claims: {missing}")
    if claims["typ"] != expected_type:
        raise InvalidToken("wrong token type")
    if not all(isinstance(claims[c], int) for c in ("exp", "iat", "nbf")):
        raise InvalidToken("time claims must be integers")
    try:
        return TokenClaims(
            subject=uuid.UUID(claims["sub"]),
            session_id=uuid.UUID(claims["sid"]),
            token_id=uuid.UUID(claims["jti"]),
            token_type=claims["typ"],
            expires_at=datetime.fromtimestamp(claims["exp"], tz=utcnow().tzinfo),
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken("malformed identifiers") from exc


class VerifiedTokens:
    """Access tokens this worker has verified, served from memory until they expire.

    Verification is a pure function of the token, the key and the clock, so a token that
    passed once passes again until its `exp`; only that is rechecked on a hit. Only tokens
    that passed in full are kept, at most `size` of them (the least recently used go first),
    so forged or garbage tokens always take the full path and cannot fill it. Revocation is
    unaffected: the session is looked up on every request (auth/dependencies.py)."""

    def __init__(self, settings: Settings, size: int = 4096) -> None:
        self._settings = settings
        self._size = size
        self._seen: OrderedDict[str, TokenClaims] = OrderedDict()

    def decode(self, token: str) -> TokenClaims:
        claims = self._seen.get(token)
        if claims is not None:
            if utcnow() < claims.expires_at:
                self._seen.move_to_end(token)
                return claims
            del self._seen[token]  # and the full check below says why it is refused
        claims = decode(self._settings, token, expected_type=ACCESS)
        self._seen[token] = claims
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return claims


def fingerprint(token: str) -> str:
    """What is stored of a refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()
