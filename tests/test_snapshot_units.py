"""What a snapshot counts, as a pure rule: from the cases' columns (as the database reading
codes them) to each measure's units, one per person and month."""

from __future__ import annotations

from array import array
from datetime import datetime
from pathlib import Path

import numpy as np

from referral.stats.disclosure import Units
from referral.stats.policy import SOURCES, load_reporting_policy
from referral.stats.snapshot import EVENT_COLUMN, _Cases, _Coder

POLICY = load_reporting_policy(Path(__file__).resolve().parent.parent / "policies/reporting.yaml")
RELEASED = [f"2025-{m:02d}" for m in range(1, 13)]


def cases(*rows: dict) -> _Cases:
    """Cases from plain rows (person, town, submitted, and any source column), coded as
    `snapshot._read_cases` codes what it reads."""
    places = _Coder()
    coders = {name: _Coder() for name in SOURCES}
    months = {name: array("h") for name in EVENT_COLUMN.values()}
    defaults = {
        "referrer_sector": "education",
        "primary_concern": "far_right",
        "subject_age_band": "15-17",
        "subject_gender": "female",
        "closure_outcome": None,
    }
    for row in rows:
        for name in months:
            moment: datetime | None = row.get(name)
            months[name].append(-1 if moment is None else moment.year * 12 + moment.month - 1)
    return _Cases(
        person=np.array([row["person"] for row in rows], dtype=np.int32),
        municipality=np.array([places.code(row["town"]) for row in rows], dtype=np.int32),
        municipalities=places.values,
        months={name: np.frombuffer(codes, dtype=np.int16) for name, codes in months.items()},
        sources={
            name: np.array(
                [coders[name].code(row.get(name, defaults[name])) for row in rows], dtype=np.int16
            )
            for name in SOURCES
        },
        values={name: coder.values for name, coder in coders.items()},
    )


def listed(units: Units) -> list[tuple]:
    """Each unit as (person, town, month, categories by name)."""
    names = {name: POLICY.dimensions[name].categories for name in units.categories}
    return [
        (
            int(units.person[i]),
            units.municipalities[units.municipality[i]],
            units.months[units.month[i]],
            {name: names[name][int(code[i])] for name, code in units.categories.items()},
        )
        for i in range(len(units))
    ]


def referrals(*rows: dict) -> dict[str, list[tuple]]:
    by_year = snapshot_units("referrals", cases(*rows))
    return {year: listed(units) for year, units in by_year.items()}


def snapshot_units(measure: str, coded: _Cases) -> dict[str, Units]:
    from referral.stats.snapshot import _units

    return _units(POLICY, measure, coded, RELEASED)


def test_a_person_referred_twice_in_a_month_counts_once_where_first_referred():
    got = referrals(
        {"person": 7, "town": "north", "submitted_at": datetime(2025, 3, 2)},
        {"person": 7, "town": "south", "submitted_at": datetime(2025, 3, 20)},
        {"person": 7, "town": "south", "submitted_at": datetime(2025, 4, 1)},
    )
    assert [(p, town, month) for p, town, month, _ in got["2025"]] == [
        (7, "north", "2025-03"),
        (7, "south", "2025-04"),
    ]


def test_different_people_in_the_same_month_are_each_counted():
    got = referrals(
        {"person": 1, "town": "north", "submitted_at": datetime(2025, 5, 1)},
        {"person": 2, "town": "north", "submitted_at": datetime(2025, 5, 1)},
    )
    assert [p for p, *_ in got["2025"]] == [1, 2]


def test_unreleased_months_and_cases_without_the_event_are_not_counted():
    got = referrals(
        {"person": 1, "town": "north", "submitted_at": datetime(2024, 12, 31)},  # not released
        {"person": 2, "town": "north", "submitted_at": None},  # never submitted
        {"person": 3, "town": "north", "submitted_at": datetime(2025, 12, 31, 23, 59)},
    )
    assert got == {"2025": [(3, "north", "2025-12", got["2025"][0][3])]}


def test_categories_are_recoded_and_a_case_outside_a_dimension_is_left_out():
    got = referrals(
        {"person": 1, "town": "n", "submitted_at": datetime(2025, 1, 9), "subject_gender": "other"},
        {"person": 2, "town": "n", "submitted_at": datetime(2025, 1, 9), "subject_gender": "x"},
    )
    (unit,) = got["2025"]
    assert unit[0] == 1
    assert unit[3] == {
        "sector": "education",
        "concern": "far_right",
        "age_band": "15-17",
        "gender": "other_or_unknown",
    }


def test_each_measure_counts_its_own_event_and_dimensions():
    coded = cases(
        {
            "person": 4,
            "town": "east",
            "submitted_at": datetime(2025, 2, 1),
            "closed_at": datetime(2025, 9, 1),
            "closure_outcome": "signposted",
        }
    )
    (outcome,) = listed(snapshot_units("case_outcomes", coded)["2025"])
    assert outcome == (4, "east", "2025-09", {"outcome": "referred_elsewhere", "age_band": "15-17"})
    assert snapshot_units("panel_reviews", coded) == {}


def test_no_cases_no_units():
    assert referrals() == {}
    assert referrals({"person": 1, "town": "n", "submitted_at": None}) == {}
