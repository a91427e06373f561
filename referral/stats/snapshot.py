"""Building a snapshot: read the non-identifying columns of released periods, protect the
whole family at once (per measure and year, the units that are linked), store only what
may be published. True counts of suppressed cells are never stored."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from array import array
from dataclasses import dataclass
from datetime import date
from functools import partial

import anyio
import numpy as np
from sqlalchemy import func, insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral import apart
from referral.config import Settings
from referral.models import CaseFile, Municipality, StatsCell, StatsSnapshot
from referral.stats.disclosure import (
    NATIONAL,
    GateFailure,
    Publication,
    TableSpec,
    Units,
    build_cells,
    protect,
)
from referral.stats.policy import SOURCES, ReportingPolicy

EVENT_COLUMN = {
    "referred": "submitted_at",
    "reached_panel": "panel_at",
    "adopted": "consent_pending_at",
    "closed": "closed_at",
}
_limiter = anyio.CapacityLimiter(1)


def table_key(table: TableSpec) -> str:
    return f"{table.geography}/{table.period}/{'+'.join(table.dimensions)}"


# How many rows a snapshot reads from the database at a time. It holds every case as a few
# integer codes (26 bytes a case), never as rows: a national data set is a million
# cases, and as rows they took about 830 bytes each, over a worker's memory budget (ADR 0025).
_BATCH = 2_000
# Cells are written a few hundred at a time, so that writing them holds the worker's event
# loop for milliseconds at a time, not for the whole family.
_INSERT_BATCH = 500


@dataclass
class _Cases:
    """The non-identifying columns of every case as integer codes, one position per case."""

    person: np.ndarray  # equal code, same person (stat_person)
    municipality: np.ndarray  # index into `municipalities`
    municipalities: list[str]
    months: dict[str, np.ndarray]  # per event column: year * 12 + month - 1; -1 if none
    sources: dict[str, np.ndarray]  # per source column: index into `values[column]`
    values: dict[str, list[str | None]]


async def _read_cases(session: AsyncSession) -> _Cases:
    person = func.dense_rank().over(order_by=CaseFile.stat_person)
    columns = (
        person,
        Municipality.code,
        *(getattr(CaseFile, name) for name in EVENT_COLUMN.values()),
        *(getattr(CaseFile, name) for name in SOURCES),
    )
    stmt = (
        select(*columns)
        .join(Municipality, Municipality.id == CaseFile.municipality_id)
        .order_by(CaseFile.id)  # ids are time-ordered (uuid7): a person's first case first
    )
    people = array("i")
    places, municipality = _Coder(), array("i")
    months = {name: array("h") for name in EVENT_COLUMN.values()}
    coders = {name: _Coder() for name in SOURCES}
    sources = {name: array("h") for name in SOURCES}
    result = await session.stream(stmt.execution_options(yield_per=_BATCH))
    async for batch in result.partitions():
        for row in batch:
            people.append(row[0])
            municipality.append(places.code(row[1]))
            for offset, name in enumerate(months, start=2):
                moment = row[offset]
                months[name].append(-1 if moment is None else moment.year * 12 + moment.month - 1)
            for offset, name in enumerate(sources, start=2 + len(months)):
                sources[name].append(coders[name].code(row[offset]))
    return _Cases(
        person=np.frombuffer(people, dtype=np.int32),
        municipality=np.frombuffer(municipality, dtype=np.int32),
        municipalities=places.values,
        months={name: np.frombuffer(codes, dtype=np.int16) for name, codes in months.items()},
        sources={name: np.frombuffer(codes, dtype=np.int16) for name, codes in sources.items()},
        values={name: coder.values for name, coder in coders.items()},
    )


class _Coder:
    """Codes 0, 1, 2, … for values in the order they first appear."""

    def __init__(self) -> None:
        self.values: list = []
        self._codes: dict = {}

    def code(self, value) -> int:
        found = self._codes.get(value)
        if found is None:
            found = self._codes[value] = len(self.values)
            self.values.append(value)
        return found


def _units(
    policy: ReportingPolicy, measure: str, cases: _Cases, released_months: list[str]
) -> dict[str, Units]:
    """The measure's units of each year: one per person and month (their first case),
    with a category in each of the measure's dimensions."""
    spec = policy.measures[measure]
    month = cases.months[EVENT_COLUMN[spec.counts]]
    released = [int(m[:4]) * 12 + int(m[5:]) - 1 for m in released_months]
    keep = np.isin(month, released)
    categories = {}
    for name in spec.dimensions:
        dimension = policy.dimensions[name]
        index = {category: i for i, category in enumerate(dimension.categories)}
        of_value = [index.get(dimension.category_of(v), -1) for v in cases.values[dimension.source]]
        code = np.array(of_value, dtype=np.int16)[cases.sources[dimension.source]]
        keep &= code >= 0
        categories[name] = code
    chosen = np.flatnonzero(keep)
    if not len(chosen):
        return {}
    # one unit per person and month: the first of their cases in that month
    span = int(month.max()) + 1
    pairs = cases.person[chosen].astype(np.int64) * span + month[chosen]
    chosen = np.sort(chosen[np.unique(pairs, return_index=True)[1]])
    by_year: dict[str, Units] = {}
    for key in np.unique(month[chosen] // 12):
        rows = chosen[month[chosen] // 12 == key]
        by_year[str(key)] = Units(
            person=cases.person[rows],
            municipality=cases.municipality[rows],
            month=month[rows] % 12,
            categories={name: code[rows] for name, code in categories.items()},
            municipalities=cases.municipalities,
            months=[f"{key}-{m:02d}" for m in range(1, 13)],
        )
    return by_year


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


def refuse_future(as_of: date) -> None:
    if as_of > date.today():
        raise FutureRelease(f"as of {as_of} is in the future")


async def build_snapshot(
    session: AsyncSession, policy: ReportingPolicy, as_of: date, created_by: uuid.UUID | None
) -> StatsSnapshot:
    """Build and store a snapshot in this process (the CLI, the demo, the bench).

    Raises disclosure.GateFailure (and stores nothing) if the family cannot be protected,
    FutureRelease if `as_of` is after today."""
    refuse_future(as_of)
    cells = await _published_cells(session, policy, as_of)
    return await store(session, policy, as_of, created_by, cells)


async def cells_apart(settings: Settings, policy: ReportingPolicy, as_of: date) -> list[dict]:
    """Every cell of the protected family, computed in a process of its own (the API).

    Building reads every case and protects the family with dense matrices: at national
    scale about 320 MiB and a minute of CPU. In a serving worker that memory would stay
    with the worker, and the reading would stall its event loop for everyone else's
    requests (ADR 0025). The child reads and computes only; what it publishes is written by
    the caller.

    Raises disclosure.GateFailure if the family cannot be protected, apart.ApartError if
    the child gave no answer."""
    return await apart.run(
        _cells_in_this_process,
        settings,
        policy,
        as_of,
        name="referral-snapshot-build",
        expected=(GateFailure,),
    )


def _cells_in_this_process(settings: Settings, policy: ReportingPolicy, as_of: date) -> list[dict]:
    """The build process's work: its own engine, one read-only transaction."""
    from referral.db import create_engine, create_sessionmaker

    async def cells() -> list[dict]:
        engine = create_engine(settings, batch=True)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await _published_cells(session, policy, as_of)
        finally:
            await engine.dispose()

    return asyncio.run(cells())


async def _published_cells(
    session: AsyncSession, policy: ReportingPolicy, as_of: date
) -> list[dict]:
    """Every cell of the protected family, as stored (without its snapshot)."""
    municipalities = (await session.exec(select(Municipality.code, Municipality.region))).all()
    region_of = dict(municipalities)
    geos = {
        "municipality": sorted(region_of),
        "region": sorted(set(region_of.values())),
        "national": [NATIONAL],
    }
    released = policy.released(as_of)
    cases = await _read_cases(session)
    cells: list[dict] = []
    years = sorted({p[:4] for p in released["month"]})
    for measure in policy.measures:
        by_year = _units(policy, measure, cases, released["month"])
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
            publication = await anyio.to_thread.run_sync(work, limiter=_limiter)
            cells += (
                {
                    "measure": measure,
                    "table_key": table_key(cell.key.table),
                    "period": cell.key.period,
                    "area": cell.key.geo,
                    "categories": list(cell.key.categories),
                    "value": cell.published,
                }
                for cell in publication.cells
            )
    return cells


async def store(
    session: AsyncSession,
    policy: ReportingPolicy,
    as_of: date,
    created_by: uuid.UUID | None,
    cells: list[dict],
) -> StatsSnapshot:
    # Counted before the snapshot is written: a published snapshot is never updated (the
    # database refuses it), so it is inserted once, whole, and its cells after it.
    snapshot = StatsSnapshot(
        as_of=as_of,
        created_by=created_by,
        policy_digest=policy_digest(policy),
        cells=len(cells),
        suppressed=sum(cell["value"] is None for cell in cells),
    )
    session.add(snapshot)
    await session.flush()
    connection = await session.connection()
    for first in range(0, len(cells), _INSERT_BATCH):
        rows = [
            cell | {"snapshot_id": snapshot.id} for cell in cells[first : first + _INSERT_BATCH]
        ]
        await connection.execute(insert(StatsCell), rows)
    return snapshot
