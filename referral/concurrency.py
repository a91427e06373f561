"""Optimistic concurrency: ETag carries the version, writes need If-Match.

Missing If-Match is 428; a stale one is 412. The write itself is a conditional UPDATE on
(id, version), so two writers holding the same ETag cannot both win.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import Request, Response
from sqlalchemy import update
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.errors import PreconditionFailed, PreconditionRequired

_ETAG = re.compile(r'^(?:W/)?"(\d{1,18})"$')


def etag(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


def expected_version(request: Request) -> int:
    header = request.headers.get("if-match")
    if header is None:
        raise PreconditionRequired("Send the ETag you last read in an If-Match header.")
    match = _ETAG.match(header.strip())
    if match is None:
        raise PreconditionFailed("If-Match does not name a version of this resource.")
    return int(match.group(1))


async def versioned_update(
    session: AsyncSession, model: Any, obj_id: uuid.UUID, version: int, values: dict[str, Any]
) -> int:
    """Apply `values` if the row is still at `version`; return the new version or raise 412."""
    result = await session.exec(
        update(model)
        .where(model.id == obj_id, model.version == version)
        .values(**values, version=version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise PreconditionFailed("The resource was changed by someone else; read it again.")
    return version + 1
