"""Answering statistics queries: only slices of the latest stored publication.

Every role gets the same value for the same cell; a role's scope only limits which cells
it may ask for. Nothing outside the family is answered (400, naming what is allowed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


async def latest_snapshot(session: AsyncSession) -> StatsSnapshot:
    snapshot = (
        await session.exec(select(StatsSnapshot).order_by(col(StatsSnapshot.id).desc()).limit(1))
    ).first()
    if snapshot is None:
        raise NotFound("No statistics have been published yet.")
    return snapshot


async def own_area(session: AsyncSession, access: Access) -> str | None:
    """The municipality code a municipal-scope actor is limited to, or None for all."""
    if access.grant.scope is not Scope.municipality:
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
) -> tuple[StatsSnapshot, TableSpec, list[StatsCell]]:
    if query.measure not in policy.measures:
        raise NotFound(f"No such measure; there are {sorted(policy.measures)}.")
    table = resolve_table(policy, query)
    limited_to = await own_area(session, access)
    area = query.area
    if limited_to is not None:
        if query.geography != "municipality" or (area not in (None, limited_to)):
            raise Forbidden("You may see only your own municipality's statistics.")
        area = limited_to
    snapshot = await latest_snapshot(session)
    stmt = select(StatsCell).where(
        StatsCell.snapshot_id == snapshot.id,
        StatsCell.measure == query.measure,
        StatsCell.table_key == table_key(table),
        StatsCell.period == query.period,
    )
    if area is not None:
        stmt = stmt.where(StatsCell.area == area)
    cells = list((await session.exec(stmt.order_by(StatsCell.id))).all())
    if not cells:
        raise NotFound("That period is not released in the latest snapshot, or no such area.")
    return snapshot, table, cells
