"""Property tests of the disclosure-control core over random and adversarial data sets.

The checks here are independent of the implementation: the incidence of cells over units
is rebuilt from the units, and derivability is tested by comparing matrix ranks.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referral.stats.disclosure import (
    NATIONAL,
    CellKey,
    TableSpec,
    Unit,
    build_cells,
    period_of,
    protect,
)

THRESHOLD, BASE = 10, 5
SECTORS, GENDERS = ("education", "health", "police"), ("female", "male")
TABLES = [
    TableSpec("municipality", "year", ()),
    TableSpec("municipality", "year", ("sector",)),
    TableSpec("region", "quarter", ()),
    TableSpec("region", "year", ()),
    TableSpec("region", "year", ("gender",)),
    TableSpec("national", "month", ()),
    TableSpec("national", "quarter", ()),
    TableSpec("national", "quarter", ("sector",)),
    TableSpec("national", "year", ()),
    TableSpec("national", "year", ("sector",)),
    TableSpec("national", "year", ("sector", "gender")),
]
PERIODS = {
    "month": [f"2025-{m:02d}" for m in range(1, 13)],
    "quarter": [f"2025-Q{q}" for q in range(1, 5)],
    "year": ["2025"],
}
CATEGORIES = {"sector": SECTORS, "gender": GENDERS}


def world(n_municipalities: int, n_regions: int):
    region_of = {f"m{i}": f"r{i % n_regions}" for i in range(n_municipalities)}
    geos = {
        "municipality": sorted(region_of),
        "region": sorted(set(region_of.values())),
        "national": [NATIONAL],
    }
    return region_of, geos


def unit(person: int, municipality: str, month: int, sector: str, gender: str) -> Unit:
    return Unit(
        f"p{person}", municipality, f"2025-{month:02d}", (("sector", sector), ("gender", gender))
    )


def contains(key: CellKey, u: Unit, region_of) -> bool:
    geo = {
        "municipality": u.municipality,
        "region": region_of[u.municipality],
        "national": NATIONAL,
    }[key.table.geography]
    return (
        geo == key.geo
        and period_of(u.month, key.table.period) == key.period
        and all(
            u.category(d) == c for d, c in zip(key.table.dimensions, key.categories, strict=True)
        )
    )


def check_publication(units: list[Unit], n_municipalities: int, n_regions: int) -> None:
    region_of, geos = world(n_municipalities, n_regions)
    cells, atoms = build_cells(units, TABLES, PERIODS, geos, CATEGORIES, region_of)
    publication = protect(cells, atoms, region_of, THRESHOLD, BASE)
    published = [c for c in publication.cells if not c.suppressed]
    for cell in published:
        assert not 0 < cell.count < THRESHOLD
        assert cell.count % BASE == 0
    # no suppressed cell lies in the span of the published cells (rank test, independent)
    atom_list = sorted({(u.municipality, u.month, u.categories) for u in units})
    column = {a: j for j, a in enumerate(atom_list)}

    def vector(key: CellKey) -> np.ndarray:
        v = np.zeros(max(len(atom_list), 1))
        for u in units:
            if contains(key, u, region_of):
                v[column[(u.municipality, u.month, u.categories)]] = 1
        return v

    published_matrix = np.array([vector(c.key) for c in published]) if published else None
    base_rank = np.linalg.matrix_rank(published_matrix) if published else 0
    for cell in publication.cells:
        if not cell.suppressed:
            continue
        v = vector(cell.key)
        if not v.any():
            continue
        stacked = v[None, :] if published_matrix is None else np.vstack([published_matrix, v])
        assert np.linalg.matrix_rank(stacked) > base_rank, f"derivable: {cell.key}"


units_strategy = st.integers(min_value=1, max_value=5).flatmap(
    lambda n_m: st.tuples(
        st.just(n_m),
        st.integers(min_value=1, max_value=min(n_m, 3)),
        st.lists(
            st.tuples(
                st.integers(0, 400),
                st.integers(0, n_m - 1),
                st.integers(1, 12),
                st.sampled_from(SECTORS),
                st.sampled_from(GENDERS),
            ),
            max_size=120,
        ),
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(units_strategy)
def test_random_data_sets(data):
    n_m, n_r, raw = data
    units = list({(p, m): unit(p, f"m{mu}", m, s, g) for p, mu, m, s, g in raw}.values())
    check_publication(units, n_m, n_r)


def test_a_municipality_with_one_referral():
    units = [unit(0, "m0", 3, "health", "female")]
    units += [unit(i, "m1", 1 + i % 12, SECTORS[i % 3], GENDERS[i % 2]) for i in range(1, 60)]
    check_publication(units, 2, 1)


def test_all_outcomes_in_one_category():
    units = [unit(i, f"m{i % 3}", 1 + i % 12, "education", "male") for i in range(45)]
    check_publication(units, 3, 1)


def test_a_ten_beside_a_one():
    units = [unit(i, "m0", 5, "education", "female") for i in range(10)]
    units += [unit(100, "m0", 5, "police", "female")]
    check_publication(units, 1, 1)


def test_empty_data_publishes_zeros():
    region_of, geos = world(2, 1)
    cells, atoms = build_cells([], TABLES, PERIODS, geos, CATEGORIES, region_of)
    publication = protect(cells, atoms, region_of, THRESHOLD, BASE)
    assert {c.count for c in publication.cells} == {0}
    assert not any(c.suppressed for c in publication.cells)


# --- differencing attacks on the published family ----------------------------------------------


def _published(units, n_m, n_r):
    region_of, geos = world(n_m, n_r)
    cells, atoms = build_cells(units, TABLES, PERIODS, geos, CATEGORIES, region_of)
    publication = protect(cells, atoms, region_of, THRESHOLD, BASE)
    return {c.key: c for c in publication.cells}


def _key(geography, period_level, geo, period, dims=(), cats=()):
    return CellKey(TableSpec(geography, period_level, dims), geo, period, cats)


def test_region_total_minus_its_other_municipalities_reveals_nothing():
    # m0 has 3 referrals; m1 and m2 have 25 and 40: a naive release gives m0 = R - 25 - 40
    units = [unit(i, "m0", 2, "health", "male") for i in range(3)]
    units += [unit(10 + i, "m1", 2, "health", "male") for i in range(25)]
    units += [unit(100 + i, "m2", 2, "health", "male") for i in range(40)]
    cells = _published(units, 3, 1)
    region = cells[_key("region", "year", "r0", "2025")]
    parts = [cells[_key("municipality", "year", m, "2025")] for m in ("m0", "m1", "m2")]
    assert parts[0].suppressed
    assert region.suppressed or any(p.suppressed for p in parts[1:])


def test_a_year_minus_its_quarters_reveals_nothing():
    units = [unit(i, "m0", 1 + i % 9, "police", "female") for i in range(30)]  # Q1-Q3
    units += [unit(500 + i, "m0", 11, "police", "female") for i in range(4)]  # Q4: 4
    cells = _published(units, 1, 1)
    q4 = cells[_key("national", "quarter", NATIONAL, "2025-Q4")]
    year = cells[_key("national", "year", NATIONAL, "2025")]
    others = [cells[_key("national", "quarter", NATIONAL, f"2025-Q{q}")] for q in (1, 2, 3)]
    assert q4.suppressed
    assert year.suppressed or any(o.suppressed for o in others)


def test_a_breakdown_with_and_without_a_filter_reveals_nothing():
    # national sector breakdown vs the same breakdown filtered by gender (the 2-way table)
    units = [unit(i, "m0", 1 + i % 12, "education", "female") for i in range(30)]
    units += [unit(200 + i, "m0", 1 + i % 12, "education", "male") for i in range(2)]
    units += [unit(300 + i, "m0", 1 + i % 12, "health", "male") for i in range(20)]
    cells = _published(units, 1, 1)
    whole = cells[_key("national", "year", NATIONAL, "2025", ("sector",), ("education",))]
    female = cells[
        _key("national", "year", NATIONAL, "2025", ("sector", "gender"), ("education", "female"))
    ]
    male = cells[
        _key("national", "year", NATIONAL, "2025", ("sector", "gender"), ("education", "male"))
    ]
    assert male.suppressed
    assert whole.suppressed or female.suppressed


def test_the_audit_gate_refuses_a_derivable_cell():
    import pytest

    from referral.stats.disclosure import GateFailure, audit_gate, cell_gram, relations

    units = [unit(i, "m0", 2, "health", "male") for i in range(3)]
    units += [unit(10 + i, "m1", 2, "health", "male") for i in range(25)]
    region_of, geos = world(2, 1)
    cells, incidence = build_cells(units, TABLES, PERIODS, geos, CATEGORIES, region_of)
    # suppress m0's yearly total alone, as a naive "hide small cells" release would
    for cell in cells:
        key = cell.key
        if key.table == TableSpec("municipality", "year", ()) and key.geo == "m0":
            cell.suppressed = True
    with pytest.raises(GateFailure):
        audit_gate(cells, cell_gram(cells, incidence), relations(cells, region_of), THRESHOLD)


def test_counts_are_of_distinct_individuals_per_period():
    region_of, geos = world(1, 1)
    units = [unit(1, "m0", 1, "health", "male"), unit(1, "m0", 2, "health", "male")]
    units += [unit(2, "m0", 2, "health", "male")]
    cells, _ = build_cells(units, TABLES, PERIODS, geos, CATEGORIES, region_of)
    count = {
        (c.key.table.period, c.key.period): c.count
        for c in cells
        if c.key.table.dimensions == () and c.key.table.geography == "national"
    }
    assert count[("month", "2025-01")] == 1
    assert count[("month", "2025-02")] == 2
    assert count[("quarter", "2025-Q1")] == 2  # person 1 counted once in the quarter
    assert count[("year", "2025")] == 2
