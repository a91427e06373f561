"""The lean case list (ADR 0030, 0031): on PostgreSQL, an unfiltered list page asked by an
actor this worker has already authenticated is one statement on the driver, the page with
the actor's check, and its audit event written into the chain by the sealer's round. It
must answer exactly as the full path does, with the same event, send no page without its
event, and leave to the full path, having written nothing, whatever it cannot answer so."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from referral.cases.lean_list import page_asked
from referral.models import AuthSession, User
from referral.models.base import utcnow
from referral.models.enums import Agency
from referral.pagination import PageParams
from tests.case_world import force_state, make_town, new_case
from tests.helpers import (
    assert_trail_whole,
    event_facts,
    garbled_name_of,
    observed_get,
    refusing_events_of,
)


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


async def _list(app, client, headers: dict, query: str = ""):
    return await observed_get(app, client, f"/api/v1/cases{query}", headers)


async def _full(app, client, headers: dict, query: str = ""):
    lean, app.state.lean_case_list = app.state.lean_case_list, None
    try:
        return await _list(app, client, headers, query)
    finally:
        app.state.lean_case_list = lean


@pytest.mark.postgres_only
async def test_every_lister_gets_in_one_statement_what_the_full_path_gives(app, client, town):
    cases = [await new_case(client, town.referrer) for _ in range(5)]
    for case_id in cases[:3]:
        await force_state(app, case_id, "panel")
    listers = {"coordinator": town.coordinator} | {
        f"panel.{agency.value}": town.panel[agency] for agency in Agency
    }
    for name, lister in listers.items():
        first, statements, _ = await _list(app, client, lister.headers)
        assert first.status_code == 200, (name, first.text)  # the full path: now known
        for query in ("", "?limit=2"):
            lean, statements, lean_events = await _list(app, client, lister.headers, query)
            assert lean.status_code == 200, (name, lean.text)
            assert len(statements) == 1, (name, statements)
            full, statements, full_events = await _full(app, client, lister.headers, query)
            assert len(statements) == 3, (name, statements)
            assert lean.content == full.content, name
            assert lean.headers["content-type"] == full.headers["content-type"], name
            assert [event_facts(e) for e in lean_events] == [event_facts(e) for e in full_events], (
                name
            )
            assert lean_events[0].resource_ids == [i["id"] for i in lean.json()["items"]]
    listed = {
        name: len((await _full(app, client, lister.headers))[0].json()["items"])
        for name, lister in listers.items()
    }
    assert listed["coordinator"] == 5
    assert listed["panel.education"] == 3  # a panel member lists the cases at the panel


@pytest.mark.postgres_only
async def test_the_pages_follow_their_cursor_as_the_full_path_does(app, client, town):
    for _ in range(5):
        await new_case(client, town.referrer)
    headers = town.coordinator.headers
    await _list(app, client, headers)
    query, seen = "?limit=2", []
    while True:
        lean, statements, _ = await _list(app, client, headers, query)
        full, _, _ = await _full(app, client, headers, query)
        assert len(statements) == 1, statements
        assert lean.content == full.content
        page = lean.json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={page['next_cursor']}"
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.postgres_only
async def test_an_account_moved_or_signed_out_since_is_decided_afresh(app, client, world, town):
    case_id = await new_case(client, town.referrer)
    headers = town.coordinator.headers
    await _list(app, client, headers)
    listed, statements, _ = await _list(app, client, headers)
    assert len(statements) == 1
    assert [item["id"] for item in listed.json()["items"]] == [case_id]

    elsewhere = await world.municipality()
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(User).where(User.id == town.coordinator.id).values(municipality_id=elsewhere.id)
        )
    moved, statements, events = await _list(app, client, headers)
    assert moved.status_code == 200
    assert moved.json()["items"] == []  # the old municipality's case is not listed
    assert len(statements) > 1  # the lean page came back empty; the full path answered
    assert [(e.outcome, e.actor_municipality_id) for e in events] == [("allowed", elsewhere.id)]

    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession)
            .where(AuthSession.user_id == town.coordinator.id)
            .values(revoked_at=utcnow())
        )
    refused, _, events = await _list(app, client, headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 401)]


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "query",
    [
        "?state=submitted",  # a filter
        "?limit=050",  # another form of a number
        "?limit=50&limit=2",  # a parameter twice
        "?limit=0",  # out of range: the full path's 422
        "?limit=101",
        "?cursor=not-a-uuid",
    ],
)
async def test_filters_and_other_forms_take_the_full_path(app, client, town, query):
    await new_case(client, town.referrer)
    headers = town.coordinator.headers
    await _list(app, client, headers)
    lean, statements, lean_events = await _list(app, client, headers, query)
    full, full_statements, full_events = await _full(app, client, headers, query)
    assert not any("auth_session" in s and "case_file" in s for s in statements), statements
    assert len(statements) == len(full_statements)
    assert lean.status_code == full.status_code
    assert lean.content == full.content
    assert [event_facts(e) for e in lean_events] == [event_facts(e) for e in full_events]


@pytest.mark.postgres_only
async def test_a_referrer_and_an_empty_page_take_the_full_path(app, client, world, town):
    await new_case(client, town.referrer)
    await _list(app, client, town.referrer.headers)
    own, statements, _ = await _list(app, client, town.referrer.headers)
    assert own.status_code == 200
    assert "stage" in own.json()["items"][0]  # the referrer's own view of their referral
    assert len(statements) == 3

    empty = await make_town(client, world)
    await _list(app, client, empty.coordinator.headers)
    answer, statements, events = await _list(app, client, empty.coordinator.headers)
    assert answer.json() == {"items": [], "next_cursor": None}
    assert len(statements) == 1 + 3  # the lean page, empty; then the full path
    assert [(e.outcome, e.resource_ids) for e in events] == [("allowed", [])]


@pytest.mark.postgres_only
async def test_lean_lists_leave_the_trail_whole(app, client, town):
    await new_case(client, town.referrer)
    for _ in range(5):
        response, _, _ = await _list(app, client, town.coordinator.headers)
        assert response.status_code == 200
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_no_page_leaves_without_its_audit_event(app, client, town):
    case_id = await new_case(client, town.referrer)
    headers = town.coordinator.headers
    await _list(app, client, headers)
    async with refusing_events_of(app, "case.list") as failing:
        response, statements, events = await _list(app, failing, headers)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert case_id not in response.text
    assert "Synthetic" not in response.text
    assert len(statements) == 1  # the page was read; its event was refused; nothing sent
    assert events == []


@pytest.mark.postgres_only
async def test_a_page_that_cannot_be_built_records_no_event(app, client, town):
    case_id = await new_case(client, town.referrer)
    headers = town.coordinator.headers
    await _list(app, client, headers)
    async with garbled_name_of(app, case_id) as failing:
        response, statements, events = await _list(app, failing, headers)
    assert response.status_code == 500
    assert len(statements) == 1  # the page was read, and failed to decrypt: no event
    assert [e.outcome for e in events if e.action == "case.list"] == []


# --- pure rules ------------------------------------------------------------------------------

CURSOR = uuid.UUID("01a24c98-74b8-7741-9a40-7a5d17e35b2a")


@pytest.mark.parametrize(
    ("query", "page"),
    [
        (b"", PageParams(limit=50, cursor=None)),
        (b"limit=1", PageParams(limit=1, cursor=None)),
        (b"limit=100", PageParams(limit=100, cursor=None)),
        (f"cursor={CURSOR}&limit=7".encode(), PageParams(limit=7, cursor=CURSOR)),
        (b"limit=0", None),
        (b"limit=101", None),
        (b"limit=050", None),
        (b"limit=%2B5", None),
        (b"limit=", None),
        (b"limit=5&limit=5", None),
        (b"state=submitted", None),
        (b"limit=5&overdue_reviews=true", None),
        (f"cursor={str(CURSOR).upper()}".encode(), None),
        (f"cursor={CURSOR.hex}".encode(), None),
        (b"cursor=", None),
        (b"limit=\xff", None),
    ],
)
def test_only_a_plain_page_is_asked_of_the_lean_list(query, page):
    assert page_asked(query) == page
