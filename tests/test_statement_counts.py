"""No N+1: the SQL statements a request makes must not grow with the rows it returns."""

from __future__ import annotations

import pytest

from referral.models.enums import Role
from tests.case_world import etag, make_town, new_case
from tests.conftest import bearer, login
from tests.helpers import counting


async def _statements(
    app, client, url: str, headers: dict, rounds: list[str] | None = None
) -> tuple[int, list[str]]:
    with counting(app, rounds) as statements:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return len(statements), statements


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


async def test_case_list_statement_count_does_not_grow_with_the_page(app, client, town):
    coordinator = town.coordinator.headers
    for _ in range(2):
        await new_case(client, town.referrer)
    small, _ = await _statements(app, client, "/api/v1/cases?limit=50", coordinator)
    for _ in range(20):
        await new_case(client, town.referrer)
    large, statements = await _statements(app, client, "/api/v1/cases?limit=50", coordinator)
    page = (await client.get("/api/v1/cases?limit=50", headers=coordinator)).json()["items"]
    assert len(page) == 22
    assert large == small, statements
    assert large <= 8, statements


async def test_case_detail_and_notes_statement_counts_do_not_grow_with_the_notes(app, client, town):
    coordinator = town.coordinator.headers
    case_id = await new_case(client, town.referrer)
    note = {"section": "general", "body": "Synthetic note for counting statements."}
    url = f"/api/v1/cases/{case_id}/notes"
    assert (await client.post(url, json=note, headers=coordinator)).status_code == 201
    detail_one, _ = await _statements(app, client, f"/api/v1/cases/{case_id}", coordinator)
    notes_one, _ = await _statements(app, client, url, coordinator)
    for _ in range(12):
        assert (await client.post(url, json=note, headers=coordinator)).status_code == 201
    rounds: list[str] = []
    detail_many, detail = await _statements(
        app, client, f"/api/v1/cases/{case_id}", coordinator, rounds
    )
    notes_many, notes = await _statements(app, client, url, coordinator)
    assert len((await client.get(url, headers=coordinator)).json()) == 13
    assert detail_many == detail_one, detail
    # the actor; the case under the access rule with every record of it, in one statement;
    # the audit event, staged with its change
    assert detail_many == 3, detail
    # the sealer's round after it, shared by every request waiting at the time: lock the
    # head, read what is staged, chain it and unstage it (one statement on PostgreSQL, which
    # moves the rows by their links; two elsewhere), move the head
    moving = 1 if app.state.engine.dialect.name == "postgresql" else 2
    assert len(rounds) == 3 + moving, rounds
    assert notes_many == notes_one, notes


async def test_audit_search_statement_count_does_not_grow_with_the_page(app, client, world, town):
    auditor = bearer(await login(client, await world.account(Role.auditor)))
    for _ in range(3):
        await new_case(client, town.referrer)
    small, _ = await _statements(app, client, "/api/v1/audit/events?limit=2", auditor)
    large, statements = await _statements(app, client, "/api/v1/audit/events?limit=100", auditor)
    assert large == small, statements


async def test_intake_and_a_transition_make_the_statements_they_need_and_no_more(app, client, town):
    with counting(app) as intake:
        case_id = await new_case(client, town.referrer)
    # the actor; the idempotency claim with its receipt; the case (which finds an earlier
    # referral's statistics person itself); the audit event
    assert len(intake) == 4, intake
    tag = await etag(client, town.coordinator, case_id)
    with counting(app) as transition:
        moved = await client.post(
            f"/api/v1/cases/{case_id}/transitions",
            json={"to": "screening"},
            headers={**town.coordinator.headers, "If-Match": tag},
        )
    assert moved.status_code == 200, moved.text
    # the actor; the case with the lifecycle's facts about it and its records for the
    # answer; the version bump; the transition's record; the audit event
    assert len(transition) == 5, transition
