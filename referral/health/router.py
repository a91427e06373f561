"""/livez: the process answers. /readyz: the database answers and is migrated to head."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from referral.errors import ServiceUnavailable, problem_responses

router = APIRouter(tags=["health"])


@router.get("/livez", summary="Liveness: no dependencies")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrated to head",
    responses=problem_responses(503),
)
async def readyz(request: Request) -> dict[str, str]:
    expected: str = request.app.state.migration_head
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            current = await _migration_version(connection)
    except (OSError, SQLAlchemyError) as exc:
        raise ServiceUnavailable(
            "The database is not reachable.", headers={"Retry-After": "5"}
        ) from exc
    if current != expected:
        raise ServiceUnavailable(
            "The database is not migrated to the version this release needs.",
            headers={"Retry-After": "30"},
        )
    return {"status": "ready", "migration": current}


async def _migration_version(connection: AsyncConnection) -> str | None:
    """The migrated revision, or None when the database has never been migrated."""
    try:
        async with connection.begin_nested():
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar_one_or_none()
    except SQLAlchemyError:
        return None
