"""Answering statistics queries: only slices of the latest stored publication.

Every role gets the same value for the same cell; a role's scope only limits which cells
it may ask for. Nothing outside the family is answered (400, naming what is allowed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.authz.dependencies import Access
from referral.authz.policy import Scope
from referral.errors import BadRequest, Forbidden, NotFound
from referral.models import Municipality, StatsCell, StatsSnapshot
from referral.stats.disclosure import TableSpec
from referral.stats.policy import ReportingPolicy
from referral.stats.snapshot import table_key

PERIOD_FORMS = (
    ("month", re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")),
    ("quarter", re.compile(r"^\d{4}-Q[1-4]$")),
    ("year", re.compile(r"^\d{4}$")),
)
QUERY_KEYS = frozenset({"period", "geography", "breakdown", "area"})


def period_level(period: str) -> str:
    for level, pattern in PERIOD_FORMS:
        if pattern.match(period):
            return level
    raise BadRequest("period must be YYYY, YYYY-Qn or YYYY-MM.")


@dataclass(frozen=True)
class Query:
    measure: str
    period: str
    geography: str
    breakdown: tuple[str, ...]
    area: str | None


def resolve_table(policy: ReportingPolicy, query: Query) -> TableSpec:
    level = period_level(query.period)
    wanted = set(query.breakdown)
    for table in policy.tables(query.measure):
        if (table.geography, table.period) == (query.geography, level) and set(
            table.dimensions
        ) == wanted:
            return table
    allowed = sorted(
        "+".join(t.dimensions) or "(total)"
        for t in policy.tables(query.measure)
        if (t.geography, t.period) == (query.geography, level)
    )
    raise BadRequest(
        f"{query.measure} by {'+'.join(query.breakdown) or '(total)'} is not published at "
        f"{query.geography} level per {level}. Allowed breakdowns there: {allowed or 'none'}; "
        "see GET /api/v1/stats/catalogue.",
        extra={"allowed_breakdowns": allowed},
    )


def _latest(stmt: Any) -> Any:
    """The one rule for "the latest publication": the newest snapshot id (UUIDv7)."""
    return stmt.order_by(col(StatsSnapshot.id).desc()).limit(1)


def latest_snapshot_id() -> Any:
    """The latest publication's id, as a scalar subquery."""
    return _latest(sa_select(StatsSnapshot.id)).scalar_subquery()


async def latest_snapshot(session: AsyncSession) -> StatsSnapshot:
    snapshot = (await session.exec(_latest(select(StatsSnapshot)))).first()
    if snapshot is None:
        raise NotFound("No statistics have been published yet.")
    return snapshot


def limited_to_own_area(access: Access) -> bool:
    """Whether the actor may see only their own municipality's cells; everyone else is
    answered the same for the same query."""
    return access.grant.scope is Scope.municipality


async def own_area(session: AsyncSession, access: Access) -> str | None:
    """The municipality code a municipal-scope actor is limited to, or None for all."""
    if not limited_to_own_area(access):
        return None
    code = (
        await session.exec(
            select(Municipality.code).where(Municipality.id == access.actor.municipality_id)
        )
    ).first()
    if code is None:
        raise Forbidden("Your account has no municipality.")
    return code


async def answer(
    session: AsyncSession, access: Access, policy: ReportingPolicy, query: Query
) -> tuple[Any, TableSpec, list[Any]]:
    """The latest snapshot (its id and as_of) and the cells asked for, in one statement."""
    if query.measure not in policy.measures:
        raise NotFound(f"No such measure; there are {sorted(policy.measures)}.")
    table = resolve_table(policy, query)
    limited_to = await own_area(session, access)
    area = query.area
    if limited_to is not None:
        if query.geography != "municipality" or (area not in (None, limited_to)):
            raise Forbidden("You may see only your own municipality's statistics.")
        area = limited_to
    values = {
        "measure": query.measure,
        "table_key": table_key(table),
        "period": query.period,
        "area": area,
    }
    connection = await session.connection()
    cells = (await connection.execute(_CELLS[area is not None], values)).all()
    if not cells:
        await latest_snapshot(session)  # 404 if nothing is published at all
        raise NotFound("That period is not released in the latest snapshot, or no such area.")
    snapshot = SimpleNamespace(id=cells[0].snapshot_id, as_of=cells[0].as_of)
    return snapshot, table, cells


def _cells_statement(one_area: bool) -> Any:
    latest = latest_snapshot_id()
    stmt = (
        sa_select(
            col(StatsSnapshot.id).label("snapshot_id"),
            StatsSnapshot.as_of,
            StatsCell.area,
            StatsCell.categories,
            StatsCell.value,
        )
        .join(StatsSnapshot, col(StatsSnapshot.id) == StatsCell.snapshot_id)
        .where(
            StatsCell.snapshot_id == latest,
            StatsCell.measure == bindparam("measure"),
            StatsCell.table_key == bindparam("table_key"),
            StatsCell.period == bindparam("period"),
        )
    )
    if one_area:
        stmt = stmt.where(StatsCell.area == bindparam("area"))
    return stmt.order_by(StatsCell.id)


# Built once: every statistics query runs one of them (ADR 0012).
_CELLS = {one_area: _cells_statement(one_area) for one_area in (False, True)}
