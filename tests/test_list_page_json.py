"""A list page is written by orjson (views.list_page_response): byte for byte the JSON that
pydantic gives for the route's declared model, `Page[CaseListItem]`, on the values the
database returns: names of any script, quotes and control characters, datetimes with and
without microseconds or a time zone, the driver's own UUID type, purged names, a last page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from asyncpg.pgproto import pgproto
from pydantic import TypeAdapter

from referral.cases.repository import LISTED_NAMES
from referral.cases.schemas import CaseListItem
from referral.cases.views import list_page_response
from referral.crypto import KeyRing, generate_key_entry
from referral.pagination import Page

DECLARED = TypeAdapter(Page[CaseListItem])
RING = KeyRing.parse(generate_key_entry())
NAMES = [
    ("Ana", "Synthetic"),
    ("Ëlla-Ñoor", "Sïnthétique"),
    ("Ю́рий", "Синтетичний"),
    ("名前", "合成"),
    ("Zoë 😀", 'O"Quote\\Back'),
    ("Tab\there", "New\nline \u2028\u2029 \x7f \x01"),
    ("</script>", "&amp; <b>"),
]
WHEN = [
    datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC),
    datetime(2026, 12, 7, 1, 2, 3, 4500, tzinfo=UTC),
    datetime(1999, 1, 1, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 12, 7, 1, 2, 3),  # as SQLite may return it
]


def _row(n: int, case_id: uuid.UUID, purged: bool = False) -> tuple:
    given, family = NAMES[n % len(NAMES)]
    sealed = {
        column: RING.encrypt(value, table="case_file", column=column, row_id=case_id)
        for column, value in (("given_name", given), ("family_name", family))
    }
    values = {
        "id": case_id,
        "state": "submitted",
        "urgency": ("routine", "priority", "immediate")[n % 3],
        "primary_concern": "far_right",
        "subject_age_band": "15-17",
        "submitted_at": WHEN[n % len(WHEN)],
        "version": n + 1,
        "given_name_enc": sealed["given_name"],
        "family_name_enc": sealed["family_name"],
        "purged_at": WHEN[0] if purged else None,
        "closure_outcome": None,
        "closed_at": None,
        "overdue": n % 4,
    }
    return tuple(values[name] for name in LISTED_NAMES)


def _declared_json(rows: list[tuple], cursor: uuid.UUID | None) -> bytes:
    """What pydantic writes for the page, its items built from the same rows."""
    items = []
    for row in rows:
        listed = dict(zip(LISTED_NAMES, row, strict=True))
        case_id = listed["id"]
        name = "[purged]"
        if listed["purged_at"] is None:
            name = " ".join(
                RING.decrypt(listed[f"{c}_enc"], table="case_file", column=c, row_id=case_id)
                for c in ("given_name", "family_name")
            )
        items.append(
            CaseListItem(
                id=case_id,
                reference=f"REF-{case_id.hex[-8:].upper()}",
                state=listed["state"],
                urgency=listed["urgency"],
                primary_concern=listed["primary_concern"],
                subject_name=name,
                subject_age_band=listed["subject_age_band"],
                submitted_at=listed["submitted_at"],
                overdue_reviews=listed["overdue"],
                version=listed["version"],
            )
        )
    return DECLARED.dump_json(DECLARED.validate_python({"items": items, "next_cursor": cursor}))


@pytest.mark.parametrize("driver_uuids", [False, True])
@pytest.mark.parametrize("last_page", [False, True])
def test_a_list_page_is_the_json_of_its_declared_model(driver_uuids, last_page):
    ids = [uuid.uuid4() for _ in range(len(NAMES) * 2)]
    if driver_uuids:  # asyncpg's UUID, a subclass orjson does not write by itself
        ids = [pgproto.UUID(case_id.bytes) for case_id in ids]
    rows = [_row(n, case_id, purged=n == 3) for n, case_id in enumerate(ids)]
    cursor = None if last_page else ids[-1]
    sent = list_page_response(RING, rows, cursor)
    assert sent.media_type == "application/json"
    assert sent.body == _declared_json(rows, cursor)


def test_an_empty_page_is_the_json_of_its_declared_model():
    assert list_page_response(RING, [], None).body == _declared_json([], None)


def test_a_listed_case_without_its_submission_time_is_refused_not_sent_as_null():
    (row,) = [_row(0, uuid.uuid4())]
    listed = dict(zip(LISTED_NAMES, row, strict=True)) | {"submitted_at": None}
    with pytest.raises(ValueError, match="submitted_at"):
        list_page_response(RING, [tuple(listed[name] for name in LISTED_NAMES)], None)
