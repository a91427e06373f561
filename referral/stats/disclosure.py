"""Disclosure control for a family of linked frequency tables. Pure: no web, no database.

Given counted units (one per individual, measure and month, with their categories) and
the family of tables to publish, build every cell at once and protect them together:

1. primary suppression: a count from 1 to threshold-1 is not published;
2. secondary suppression over every additive relation linking the cells (parts and total
   of a breakdown, municipalities and their region and the nation, months and their
   quarter and year) until no suppressed cell is alone in a relation and no derivable sum
   of suppressed cells is small;
3. the audit gate: each cell is a 0/1 vector over atoms (municipality x month x
   categories); no suppressed cell may lie in the linear span of the published cells
   (tested through the cells' Gram matrix, so its size does not grow with the data).
   Where one does, more is suppressed; if that cannot make the gate pass, nothing is
   published (GateFailure);
4. rounding of every published count to the base.

The gate works on the atoms that occur in the data: it assumes an attacker who even knows
which atoms are empty, which can only make it stricter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from math import prod

import numpy as np
from scipy import sparse

GEOGRAPHIES = ("municipality", "region", "national")
PERIODS = ("month", "quarter", "year")
NATIONAL = "national"


class GateFailure(Exception):
    """The protected family would let a suppressed cell be derived: publish nothing."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One individual counted once for one measure in one month."""

    person: str
    municipality: str
    month: str  # "YYYY-MM"
    categories: tuple[tuple[str, str], ...]  # (dimension, category) pairs

    def category(self, dimension: str) -> str:
        return dict(self.categories)[dimension]


@dataclass(frozen=True)
class Units:
    """Units as columns of integer codes, one row per unit: how a snapshot holds them. A
    national data set counts millions of units; as `Unit` objects, each with its own
    strings, they did not fit a worker's memory (ADR 0025).

    `person` codes persons (equal code, same person). `municipality` and `month` index
    `municipalities` and `months`. `categories[d]` indexes the `categories[d]` list given to
    `build_cells`, -1 where the unit has no category of `d`; a dimension not named has
    none."""

    person: np.ndarray
    municipality: np.ndarray
    month: np.ndarray
    categories: Mapping[str, np.ndarray]
    municipalities: Sequence[str]
    months: Sequence[str]

    def __len__(self) -> int:
        return len(self.person)

    @classmethod
    def of(cls, units: Sequence[Unit], categories: Mapping[str, Sequence[str]]) -> Units:
        municipalities = sorted({u.municipality for u in units})
        months = sorted({u.month for u in units})
        labelled = [dict(u.categories) for u in units]
        return cls(
            person=_codes([u.person for u in units]),
            municipality=_index_of([u.municipality for u in units], municipalities),
            month=_index_of([u.month for u in units], months),
            categories={
                d: _index_of([c.get(d) for c in labelled], list(categories[d])) for d in categories
            },
            municipalities=municipalities,
            months=months,
        )


@dataclass(frozen=True, slots=True)
class TableSpec:
    geography: str
    period: str
    dimensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CellKey:
    table: TableSpec
    geo: str
    period: str
    categories: tuple[str, ...]


@dataclass
class Cell:
    key: CellKey
    count: int
    suppressed: bool = False
    reason: str | None = None  # primary | secondary | gate

    @property
    def published(self) -> int | None:
        return None if self.suppressed else self.count


@dataclass
class Publication:
    cells: list[Cell]
    threshold: int
    base: int
    gate_rounds: int = 0
    stats: dict[str, int] = field(default_factory=dict)


def period_of(month: str, level: str) -> str:
    year, mm = month.split("-")
    if level == "month":
        return month
    if level == "quarter":
        return f"{year}-Q{(int(mm) - 1) // 3 + 1}"
    return year


def geo_of(municipality: str, level: str, region_of: Mapping[str, str]) -> str:
    if level == "municipality":
        return municipality
    if level == "region":
        return region_of[municipality]
    return NATIONAL


def round_to_base(count: int, base: int) -> int:
    return int((count + base / 2) // base * base)


# --- building the family ---------------------------------------------------------------------


@dataclass(frozen=True)
class Incidence:
    """Which atoms (municipality x month x categories that occur) each cell covers."""

    rows: np.ndarray  # cell index
    cols: np.ndarray  # atom index
    atoms: int


def build_cells(
    units: Units | Iterable[Unit],
    tables: Sequence[TableSpec],
    periods: Mapping[str, Sequence[str]],
    geos: Mapping[str, Sequence[str]],
    categories: Mapping[str, Sequence[str]],
    region_of: Mapping[str, str],
) -> tuple[list[Cell], Incidence]:
    """Every cell of every table (zeros included), its distinct count, and its atoms.

    Vectorised: for each table the cell of each unit is one integer, and distinct persons
    per cell come from unique (cell, person) pairs.
    """
    if not isinstance(units, Units):
        units = Units.of(list(units), categories)
    cells: list[Cell] = []
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    n = len(units)
    person = units.person
    people = int(person.max()) + 1 if n else 0
    none = np.full(n, -1, dtype=np.int64)
    dim_codes = {d: units.categories.get(d, none) for d in categories}
    atom = _row_codes(
        [units.municipality, units.month, *dim_codes.values()],
        [len(units.municipalities), len(units.months), *map(len, categories.values())],
    )
    # each level's place and period of a unit, looked up once per distinct value
    place_at = {
        "municipality": list(units.municipalities),
        "region": [region_of[m] for m in units.municipalities],
        "national": [NATIONAL] * len(units.municipalities),
    }
    geo_codes = {
        level: _index_of(place_at[level], list(geos[level]))[units.municipality] for level in geos
    }
    period_codes = {
        level: _index_of([period_of(m, level) for m in units.months], list(periods[level]))[
            units.month
        ]
        for level in periods
    }
    for table in tables:
        geo_list, period_list = list(geos[table.geography]), list(periods[table.period])
        combos = list(product(*(categories[d] for d in table.dimensions)))
        first = len(cells)
        for cats in combos:
            for geo in geo_list:
                for period in period_list:
                    cells.append(Cell(CellKey(table, geo, period, tuple(cats)), 0))
        if not n:
            continue
        geo_i, period_i = geo_codes[table.geography], period_codes[table.period]
        combo_i = np.zeros(n, dtype=np.int64)
        valid = (geo_i >= 0) & (period_i >= 0)
        for d in table.dimensions:
            code = dim_codes[d]
            valid &= code >= 0
            combo_i = combo_i * len(categories[d]) + code
        local = (combo_i * len(geo_list) + geo_i) * len(period_list) + period_i
        cell_i = local[valid]
        # distinct (cell, person) and (cell, atom) pairs, each pair packed into one integer
        persons = np.unique(cell_i * people + person[valid])
        counts = np.bincount(persons // people, minlength=len(cells) - first)
        for offset, count in enumerate(counts):
            cells[first + offset].count = int(count)
        atoms_of = np.unique(cell_i * n + atom[valid])
        rows.append((first + atoms_of // n).astype(np.int32))
        cols.append((atoms_of % n).astype(np.int32))
    empty = np.zeros(0, dtype=np.int32)
    # one list of pieces at a time beside its whole: at national scale each is 20 MiB+
    all_rows = np.concatenate(rows) if rows else empty
    del rows
    all_cols = np.concatenate(cols) if cols else empty
    del cols
    return cells, Incidence(all_rows, all_cols, int(atom.max()) + 1 if n else 0)


def _row_codes(columns: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """One code per row of the columns taken together (equal rows, equal code). Column k
    holds codes from -1 to sizes[k] - 1; a row is one integer in mixed radix."""
    if not len(columns[0]):
        return np.zeros(0, dtype=np.int64)
    if prod(size + 1 for size in sizes) >= 2**62:
        _, inverse = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
        return inverse.reshape(-1)
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for column, size in zip(columns, sizes, strict=True):
        key = key * (size + 1) + column + 1
    return np.unique(key, return_inverse=True)[1].reshape(-1)


def _codes(values: list) -> np.ndarray:
    index: dict = {}
    return np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)


def _index_of(values: list, known: list[str]) -> np.ndarray:
    """Position of each value in `known`, -1 where it is not there."""
    lookup = {v: i for i, v in enumerate(known)}
    return np.array([lookup.get(v, -1) for v in values], dtype=np.int64)


def relations(cells: Sequence[Cell], region_of: Mapping[str, str]) -> list[list[int]]:
    """Groups of cell indexes where the first is the total of the others."""
    index = {cell.key: i for i, cell in enumerate(cells)}
    groups: list[list[int]] = []
    by_table: dict[TableSpec, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_table[cell.key.table].append(cell)
    tables = set(by_table)
    for table, members in by_table.items():
        # a breakdown sums to the table one dimension shorter (same geography and period)
        for drop in range(len(table.dimensions)):
            kept = table.dimensions[:drop] + table.dimensions[drop + 1 :]
            parent = TableSpec(table.geography, table.period, kept)
            if parent not in tables:
                continue
            parts: dict[CellKey, list[int]] = defaultdict(list)
            for cell in members:
                cats = cell.key.categories[:drop] + cell.key.categories[drop + 1 :]
                parts[CellKey(parent, cell.key.geo, cell.key.period, cats)].append(index[cell.key])
            groups += [[index[total], *p] for total, p in parts.items() if total in index]
        # smaller areas sum to larger ones, shorter periods to longer ones
        for level_from, level_to, lift in (
            ("municipality", "region", lambda g, p: (region_of[g], p)),
            ("municipality", "national", lambda g, p: (NATIONAL, p)),
            ("region", "national", lambda g, p: (NATIONAL, p)),
            ("month", "quarter", None),
            ("month", "year", None),
            ("quarter", "year", None),
        ):
            if lift is not None:
                if table.geography != level_from:
                    continue
                parent = TableSpec(level_to, table.period, table.dimensions)
            else:
                if table.period != level_from:
                    continue
                parent = TableSpec(table.geography, level_to, table.dimensions)
            if parent not in tables:
                continue
            parts = defaultdict(list)
            for cell in members:
                if lift is not None:
                    geo, period = lift(cell.key.geo, cell.key.period)
                else:
                    geo, period = cell.key.geo, period_of(_as_month(cell.key.period), level_to)
                parts[CellKey(parent, geo, period, cell.key.categories)].append(index[cell.key])
            groups += [[index[total], *p] for total, p in parts.items() if total in index]
    return groups


def _as_month(period: str) -> str:
    """A month of a period ("2025-Q3" -> "2025-07"), for lifting it to a longer period."""
    if "-Q" in period:
        year, quarter = period.split("-Q")
        return f"{year}-{(int(quarter) - 1) * 3 + 1:02d}"
    return period


# --- protection ------------------------------------------------------------------------------


def _primary(cells: Sequence[Cell], threshold: int) -> None:
    for cell in cells:
        if 0 < cell.count < threshold:
            cell.suppressed, cell.reason = True, "primary"


def _suppress_one_more(cells: Sequence[Cell], group: Sequence[int]) -> bool:
    """Suppress the published cell of the group that costs least (smallest, parts first)."""
    candidates = [i for i in group if not cells[i].suppressed]
    if not candidates:
        return False
    parts = [i for i in candidates if i != group[0]] or candidates
    nonzero = [i for i in parts if cells[i].count > 0] or parts
    choice = min(nonzero, key=lambda i: (cells[i].count, i))
    cells[choice].suppressed, cells[choice].reason = True, "secondary"
    return True


def _secondary(cells: Sequence[Cell], groups: Sequence[Sequence[int]], threshold: int) -> None:
    changed = True
    while changed:
        changed = False
        for group in groups:
            hidden = [i for i in group if cells[i].suppressed]
            if not hidden or len(hidden) == len(group):
                continue
            if len(hidden) == 1:
                changed |= _suppress_one_more(cells, group)
                continue
            # with the total published, the suppressed parts' sum is derivable: not small
            total, parts = group[0], group[1:]
            if cells[total].suppressed:
                continue
            derivable = sum(cells[i].count for i in parts if cells[i].suppressed)
            if 0 < derivable < threshold:
                changed |= _suppress_one_more(cells, group)


def cell_gram(cells: Sequence[Cell], incidence: Incidence) -> np.ndarray:
    """K[i, j] = atoms shared by cells i and j: the Gram matrix of their 0/1 atom vectors.

    The gate needs only inner products of cell vectors, so it never builds a basis in atom
    space (which grows with the data); K is cells x cells whatever the volume.
    """
    rows, cols = incidence.rows, incidence.cols
    if len(rows) and not (rows[:-1] <= rows[1:]).all():
        order = np.argsort(rows, kind="stable")
        rows, cols = rows[order], cols[order]
    indptr = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(cells)), out=indptr[1:])
    # Built as compressed rows directly, with 4-byte values where they are exact (a count
    # of shared atoms below 2**24): at national scale the incidence has millions of
    # entries, and a general sparse build copied it three times over (ADR 0025).
    exact = np.float32 if incidence.atoms < 2**24 else np.float64
    matrix = sparse.csr_matrix(
        (np.ones(len(cols), dtype=exact), cols, indptr),
        shape=(len(cells), max(incidence.atoms, 1)),
    )
    return (matrix @ matrix.T).toarray().astype(np.float64)


class _Span:
    """The span of the published cells, in terms of the Gram matrix."""

    def __init__(self, gram: np.ndarray, published: list[int]) -> None:
        self.published = published
        block = gram[np.ix_(published, published)]
        values, vectors = np.linalg.eigh(block)
        keep = values > 1e-9 * max(values.max(initial=0.0), 1.0)
        self.whitened = vectors[:, keep] / np.sqrt(values[keep])  # K_PP^+ = W W^T

    def residual(self, gram: np.ndarray, cells_: list[int]) -> np.ndarray:
        """Squared distance of each cell's vector from the published span."""
        cross = gram[np.ix_(self.published, cells_)]
        projected = self.whitened.T @ cross
        return np.diag(gram)[cells_] - (projected**2).sum(axis=0)

    def coefficients(self, gram: np.ndarray, cell: int) -> np.ndarray:
        cross = gram[np.ix_(self.published, [cell])][:, 0]
        return self.whitened @ (self.whitened.T @ cross)


def derivable_cells(cells: Sequence[Cell], gram: np.ndarray) -> list[int]:
    """Suppressed cells whose atom vector lies in the span of the published cells' vectors."""
    published = [i for i, c in enumerate(cells) if not c.suppressed and gram[i, i] > 0]
    hidden = [i for i, c in enumerate(cells) if c.suppressed and gram[i, i] > 0]
    if not hidden or not published:
        return []
    residual = _Span(gram, published).residual(gram, hidden)
    return [i for i, r in zip(hidden, residual, strict=True) if r < 1e-6 * gram[i, i]]


def _publishing_cells_used(cells: Sequence[Cell], gram: np.ndarray, target: int) -> list[int]:
    """Published cells that a derivation of `target` leans on, smallest first."""
    published = [i for i, c in enumerate(cells) if not c.suppressed and gram[i, i] > 0]
    coefficients = _Span(gram, published).coefficients(gram, target)
    used = [published[k] for k, a in enumerate(coefficients) if abs(a) > 1e-9]
    return sorted(used, key=lambda i: (cells[i].count == 0, cells[i].count, i))


def protect(
    cells: list[Cell],
    atoms: Incidence,
    region_of: Mapping[str, str],
    threshold: int,
    base: int,
    max_gate_rounds: int = 500,
) -> Publication:
    _primary(cells, threshold)
    groups = relations(cells, region_of)
    _secondary(cells, groups, threshold)
    gram = cell_gram(cells, atoms)
    rounds = 0
    while True:
        leaks = derivable_cells(cells, gram)
        if not leaks:
            break
        rounds += 1
        if rounds > max_gate_rounds:
            raise GateFailure(f"{len(leaks)} suppressed cells remain derivable")
        for i in _publishing_cells_used(cells, gram, leaks[0])[:1]:
            cells[i].suppressed, cells[i].reason = True, "gate"
        _secondary(cells, groups, threshold)
    audit_gate(cells, gram, groups, threshold)
    for cell in cells:
        if not cell.suppressed:
            cell.count = round_to_base(cell.count, base)
    return Publication(
        cells=cells,
        threshold=threshold,
        base=base,
        gate_rounds=rounds,
        stats={
            "cells": len(cells),
            "suppressed": sum(c.suppressed for c in cells),
            "primary": sum(c.reason == "primary" for c in cells),
            "secondary": sum(c.reason in ("secondary", "gate") for c in cells),
        },
    )


def audit_gate(
    cells: Sequence[Cell], gram: np.ndarray, groups: Sequence[Sequence[int]], threshold: int
) -> None:
    """The last check before anything is published. Raises GateFailure; never fixes."""
    leaks = derivable_cells(cells, gram)
    if leaks:
        raise GateFailure(f"{len(leaks)} suppressed cells lie in the span of published cells")
    for cell in cells:
        if not cell.suppressed and 0 < cell.count < threshold:
            raise GateFailure("a count below the threshold would be published")
    for group in groups:
        total, parts = group[0], group[1:]
        if cells[total].suppressed or all(not cells[i].suppressed for i in parts):
            continue
        hidden = sum(cells[i].count for i in parts if cells[i].suppressed)
        if 0 < hidden < threshold:
            raise GateFailure("a derivable sum of suppressed cells is below the threshold")
