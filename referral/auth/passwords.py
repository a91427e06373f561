"""Password hashing with argon2id through the passlib API (package libpass).

Parameters are at or above OWASP's minimum for argon2id (m=19 MiB, t=2, p=1). Hashing is
CPU-heavy, so it runs in worker threads behind its own limiter, never on the event loop.

A sign-in takes its turn at the hasher (`turn`) before it touches the database. A burst of
sign-ins then queues holding no pooled connection, so it cannot starve the other requests
of the database, and one that cannot get a turn in time is answered 503.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

import anyio
from passlib.context import CryptContext

from referral.errors import ServiceUnavailable

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
_limiter_size = 2
_wait_seconds = 1.5
# Set inside `turn`: the hashing in it runs without queueing at the limiter again.
_in_turn: ContextVar[bool] = ContextVar("in_password_hashing_turn", default=False)


def configure(concurrency: int, wait_seconds: float = 1.5) -> None:
    global _limiter, _limiter_size, _wait_seconds
    _limiter_size = concurrency
    _wait_seconds = wait_seconds
    _limiter = None


def _get_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_limiter_size)
    return _limiter


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
    """Hold one of the hasher's places; the hashing inside runs in it. Raises 503 if none
    comes free within the configured wait."""
    limiter = _get_limiter()
    try:
        with anyio.fail_after(_wait_seconds):
            await limiter.acquire()
    except TimeoutError:
        logger.warning("a sign-in waited %.1f s for the password hasher: 503", _wait_seconds)
        raise ServiceUnavailable(
            "Too many sign-ins at once; try again shortly.", headers={"Retry-After": "1"}
        ) from None
    token = _in_turn.set(True)
    try:
        yield
    finally:
        _in_turn.reset(token)
        limiter.release()


async def _in_a_thread(function: Callable[..., object], *args: str) -> object:
    limiter = None if _in_turn.get() else _get_limiter()  # None: anyio's default threads
    return await anyio.to_thread.run_sync(function, *args, limiter=limiter)


async def hash_password(password: str) -> str:
    return str(await _in_a_thread(hash_password_sync, password))


def _verify(password: str, password_hash: str) -> bool:
    try:
        return _context.verify(_normalise(password), password_hash)
    except (ValueError, TypeError):
        return False


# Verified against when the account does not exist, so timing does not reveal it.
_DUMMY_HASH = hash_password_sync("dummy-password-for-timing-equalisation")


async def verify_password(password: str, password_hash: str | None) -> bool:
    target = password_hash or _DUMMY_HASH
    ok = await _in_a_thread(_verify, password, target)
    return ok is True and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    return _context.needs_update(password_hash)
