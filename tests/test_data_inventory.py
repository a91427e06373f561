"""policies/data-inventory.yaml classifies every column that exists, and nothing else."""

from __future__ import annotations

from pathlib import Path

import yaml

from referral.models import CaseFile, metadata
from referral.retention.service import CASE_PARTS
from referral.stats.snapshot import EVENT_COLUMN

INVENTORY = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "policies" / "data-inventory.yaml").read_text()
)
CATEGORIES = {"identity", "special_category", "criminal_offence", "operational", "statistical"}


def _listed() -> set[tuple[str, str]]:
    return {(t, c) for t, cols in INVENTORY["tables"].items() for c in cols}


def test_every_column_is_listed_and_every_listed_column_exists():
    actual = {(t.name, c.name) for t in metadata.tables.values() for c in t.columns}
    assert sorted(actual - _listed()) == [], "columns missing from data-inventory.yaml"
    assert sorted(_listed() - actual) == [], "listed columns that do not exist"


def test_each_entry_has_a_category_purpose_and_known_retention():
    for table, columns in INVENTORY["tables"].items():
        for column, entry in columns.items():
            assert entry["category"] in CATEGORIES, (table, column)
            assert len(entry["purpose"]) > 10, (table, column)
            assert entry["retention"] in INVENTORY["retention"], (table, column)


def test_what_the_purge_empties_is_classified_as_purged():
    for model in (CaseFile, *CASE_PARTS):
        for column in model.__table__.columns:
            if column.name.endswith("_enc") and column.name != "legal_hold_reason_enc":
                entry = INVENTORY["tables"][model.__tablename__][column.name]
                assert entry["retention"] in ("case_identity", "case_text"), column
                assert entry["category"] != "statistical", column


def test_statistics_read_only_statistical_case_columns():
    read = {
        "stat_person",
        *EVENT_COLUMN.values(),
        "referrer_sector",
        "primary_concern",
        "subject_age_band",
        "subject_gender",
        "closure_outcome",
        "municipality_id",
    }
    for column in read:
        assert INVENTORY["tables"]["case_file"][column]["category"] == "statistical", column
