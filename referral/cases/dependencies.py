"""Request-level helpers for case routes: keys, Idempotency-Key, optional If-Match.

All `async def`, although none awaits: FastAPI runs a plain `def` dependency in a worker
thread, a hand-off that cost more than the dependency itself on every request (ADR 0012).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request

from referral.cases.service import CaseKeys
from referral.concurrency import expected_version
from referral.errors import BadRequest

_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def valid_idempotency_key(key: str | None) -> bool:
    return key is not None and _KEY.match(key) is not None


async def case_keys(request: Request) -> CaseKeys:
    return request.app.state.case_keys


KeysDep = Annotated[CaseKeys, Depends(case_keys)]


async def idempotency_key(
    key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="8-128 characters; a retry reuses it"),
    ] = None,
) -> str:
    if key is None:
        raise BadRequest("An Idempotency-Key header is required to submit a referral.")
    if not valid_idempotency_key(key):
        raise BadRequest("Idempotency-Key must be 8-128 letters, digits or . _ : -")
    return key


async def optional_version(request: Request) -> int | None:
    """If-Match is optional on appends (nothing can be overwritten); checked when sent."""
    if request.headers.get("if-match") is None:
        return None
    return expected_version(request)
