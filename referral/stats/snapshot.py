"""Building a snapshot: read the non-identifying columns of released periods, protect the
whole family at once (per measure and year, the units that are linked), store only what
may be published. True counts of suppressed cells are never stored."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from datetime import date
from functools import partial

import anyio
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.models import CaseFile, Municipality, StatsCell, StatsSnapshot
from referral.stats.disclosure import NATIONAL, Publication, TableSpec, Unit, build_cells, protect
from referral.stats.policy import ReportingPolicy

EVENT_COLUMN = {
    "referred": "submitted_at",
    "reached_panel": "panel_at",
    "adopted": "consent_pending_at",
    "closed": "closed_at",
}
_limiter = anyio.CapacityLimiter(1)


def table_key(table: TableSpec) -> str:
    return f"{table.geography}/{table.period}/{'+'.join(table.dimensions)}"


async def _case_rows(session: AsyncSession):
    columns = (
        CaseFile.stat_person,
        CaseFile.referrer_sector,
        CaseFile.primary_concern,
        CaseFile.subject_age_band,
        CaseFile.subject_gender,
        CaseFile.closure_outcome,
        CaseFile.submitted_at,
        CaseFile.panel_at,
        CaseFile.consent_pending_at,
        CaseFile.closed_at,
        Municipality.code,
    )
    stmt = select(*columns).join(Municipality, Municipality.id == CaseFile.municipality_id)
    return (await session.exec(stmt)).all()


def _units(policy: ReportingPolicy, measure: str, rows, released_months: set[str]) -> list[Unit]:
    spec = policy.measures[measure]
    event = EVENT_COLUMN[spec.counts]
    seen: dict[tuple[str, str], Unit] = {}
    for row in rows:
        moment = getattr(row, event)
        if moment is None:
            continue
        month = moment.strftime("%Y-%m")
        if month not in released_months:
            continue
        categories = []
        for name in spec.dimensions:
            dimension = policy.dimensions[name]
            category = dimension.category_of(getattr(row, dimension.source))
            if category is None:
                break
            categories.append((name, category))
        else:
            # distinct individuals: one unit per person and month (their first record)
            person = str(row.stat_person)
            seen.setdefault((person, month), Unit(person, row.code, month, tuple(categories)))
    return list(seen.values())


def _protect_year(policy, measure, units, year, released, geos, region_of) -> Publication:
    periods = {level: [p for p in released[level] if p.startswith(year)] for level in released}
    tables = [t for t in policy.tables(measure) if periods[t.period]]
    categories = {name: policy.dimensions[name].categories for name in policy.dimensions}
    cells, atoms = build_cells(units, tables, periods, geos, categories, region_of)
    return protect(cells, atoms, region_of, policy.threshold, policy.rounding_base)


def policy_digest(policy: ReportingPolicy) -> str:
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


class FutureRelease(ValueError):
    """A snapshot as of a future date would release periods that have not ended yet."""


async def build_snapshot(
    session: AsyncSession, policy: ReportingPolicy, as_of: date, created_by: uuid.UUID | None
) -> StatsSnapshot:
    """Raises disclosure.GateFailure (and stores nothing) if the family cannot be protected,
    FutureRelease if `as_of` is after today."""
    if as_of > date.today():
        raise FutureRelease(f"as of {as_of} is in the future")
    municipalities = (await session.exec(select(Municipality.code, Municipality.region))).all()
    region_of = dict(municipalities)
    geos = {
        "municipality": sorted(region_of),
        "region": sorted(set(region_of.values())),
        "national": [NATIONAL],
    }
    released = policy.released(as_of)
    rows = await _case_rows(session)
    publications: list[tuple[str, Publication]] = []
    for measure in policy.measures:
        units = _units(policy, measure, rows, set(released["month"]))
        by_year: dict[str, list[Unit]] = defaultdict(list)
        for unit in units:
            by_year[unit.month[:4]].append(unit)
        years = sorted({p[:4] for p in released["month"]})
        for year in years:
            work = partial(
                _protect_year,
                policy,
                measure,
                by_year.get(year, []),
                year,
                released,
                geos,
                region_of,
            )
            publications.append((measure, await anyio.to_thread.run_sync(work, limiter=_limiter)))

    # Counted before the snapshot is written: a published snapshot is never updated (the
    # database refuses it), so it is inserted once, whole, and its cells after it.
    snapshot = StatsSnapshot(
        as_of=as_of,
        created_by=created_by,
        policy_digest=policy_digest(policy),
        cells=0,
        suppressed=0,
    )
    stored = []
    for measure, publication in publications:
        for cell in publication.cells:
            stored.append(
                StatsCell(
                    snapshot_id=snapshot.id,
                    measure=measure,
                    table_key=table_key(cell.key.table),
                    period=cell.key.period,
                    area=cell.key.geo,
                    categories=list(cell.key.categories),
                    value=cell.published,
                )
            )
    snapshot.cells = len(stored)
    snapshot.suppressed = sum(c.value is None for c in stored)
    session.add(snapshot)
    await session.flush()
    session.add_all(stored)
    await session.flush()
    return snapshot
