"""Password hashing with argon2id through the passlib API (package libpass).

Parameters are at or above OWASP's minimum for argon2id (m=19 MiB, t=2, p=1). Hashing is
CPU-heavy, so it runs in worker threads behind its own limiter, never on the event loop.

A sign-in takes a turn (`turn`) before it touches the database. The turns are twice the
hasher's places, so the hasher never waits for a sign-in's statements. A burst of sign-ins
queues for a turn holding no pooled connection, so it cannot starve the other requests of
the database, and one that gets no turn in time is answered 503.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from passlib.context import CryptContext

from referral.errors import Busy

logger = logging.getLogger("referral.auth")

MIN_LENGTH = 12
MAX_LENGTH = 128

_context = CryptContext(
    schemes=["argon2"],
    argon2__type="ID",
    argon2__memory_cost=19 * 1024,
    argon2__time_cost=2,
    argon2__parallelism=1,
)
_limiter: anyio.CapacityLimiter | None = None
_turns: anyio.CapacityLimiter | None = None
_limiter_size = 2
_wait_seconds = 1.5


def configure(concurrency: int, wait_seconds: float) -> None:
    global _limiter, _turns, _limiter_size, _wait_seconds
    _limiter_size = concurrency
    _wait_seconds = wait_seconds
    _limiter = _turns = None


def _get_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_limiter_size)
    return _limiter


def _get_turns() -> anyio.CapacityLimiter:
    global _turns
    if _turns is None:
        _turns = anyio.CapacityLimiter(2 * _limiter_size)
    return _turns


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None. Never includes the password."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    return None


def _normalise(password: str) -> str:
    # NIST SP 800-63B: normalise Unicode so the same password typed on another keyboard
    # layout or OS composes to the same bytes.
    return unicodedata.normalize("NFKC", password)


def hash_password_sync(password: str) -> str:
    return _context.hash(_normalise(password))


@asynccontextmanager
async def turn() -> AsyncIterator[None]:
    """A sign-in's turn: at most twice the hasher's places are out at once, each holding a
    connection for its statements and its hash. Raises 503 if no turn comes free within
    the configured wait."""
    turns = _get_turns()
    try:
        with anyio.fail_after(_wait_seconds):
            await turns.acquire()
    except TimeoutError:
        logger.warning(
            "a sign-in waited %.1f s for a turn at the password hasher: 503", _wait_seconds
        )
        raise Busy(
            "Too many sign-ins at once; try again shortly.", headers={"Retry-After": "1"}
        ) from None
    try:
        yield
    finally:
        turns.release()


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(hash_password_sync, password, limiter=_get_limiter())


def _verify(password: str, password_hash: str) -> bool:
    try:
        return _context.verify(_normalise(password), password_hash)
    except (ValueError, TypeError):
        return False


# Verified against when the account does not exist, so timing does not reveal it.
_DUMMY_HASH = hash_password_sync("dummy-password-for-timing-equalisation")


async def verify_password(password: str, password_hash: str | None) -> bool:
    target = password_hash or _DUMMY_HASH
    ok = await anyio.to_thread.run_sync(_verify, password, target, limiter=_get_limiter())
    return ok and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _context.needs_update(password_hash)
