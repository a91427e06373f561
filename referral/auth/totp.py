"""TOTP second factor (pyotp): secrets sealed at rest, each code usable once, recovery codes
stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp

from referral.crypto import KeyRing, open_field, seal_field
from referral.models import User

STEP_SECONDS = 30
RECOVERY_CODES = 10


def new_secret() -> str:
    return pyotp.random_base32()


def seal_secret(ring: KeyRing, user: User, secret: str) -> None:
    seal_field(ring, user, "totp_secret", secret)


def secret_of(ring: KeyRing, user: User) -> str | None:
    return open_field(ring, user, "totp_secret")


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def matching_step(secret: str, code: str, last_step: int | None, now: float | None = None):
    """The time step the code belongs to (now, or one step either side), if it was not
    used before; else None. A code is accepted once: its step must be after the last."""
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = int((now or time.time()) // STEP_SECONDS)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return [
        "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(3))
        for _ in range(RECOVERY_CODES)
    ]


def recovery_hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()
