"""No N+1: the SQL statements a request makes must not grow with the rows it returns."""

from __future__ import annotations

from datetime import date

import pytest

from referral.models import AuditVerification, StatsSnapshotBuild
from referral.models.enums import Agency, Role
from tests.case_world import etag, force_state, make_town, new_case
from tests.conftest import bearer, login
from tests.helpers import counting
from tests.routes import api_routes


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
    await client.get("/api/v1/cases", headers=coordinator)  # the actor, known to the worker
    small, _ = await _statements(app, client, "/api/v1/cases?limit=50", coordinator)
    for _ in range(20):
        await new_case(client, town.referrer)
    large, statements = await _statements(app, client, "/api/v1/cases?limit=50", coordinator)
    page = (await client.get("/api/v1/cases?limit=50", headers=coordinator)).json()["items"]
    assert len(page) == 22
    assert large == small, statements
    # the actor; the page under the access rule; the audit event naming the page's cases.
    # On PostgreSQL, the page with the actor's check, its event written by the sealer's round
    # (the lean list, ADR 0030, 0031)
    assert large == (1 if app.state.lean_case_list else 3), statements


async def test_case_detail_and_notes_statement_counts_do_not_grow_with_the_notes(
    app, client, town, monkeypatch
):
    monkeypatch.setattr("referral.audit.sealer._STAGED_AT_LEAST_EVERY", 3600.0)
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
    # the audit event, staged with its change. On PostgreSQL, the case with the actor's check
    # in one statement, its event handed to the sealer (the lean read, ADR 0028, 0031).
    assert detail_many == (1 if app.state.lean_case_read else 3), detail
    # the sealer's round after it, shared by every request waiting at the time: lock the
    # head, read what is staged, chain it and unstage it, move the head. On PostgreSQL the
    # lean read's event is handed to the round, which, with a staging request having just
    # had a round, reads nothing staged, and writes the event and moves the head in one,
    # after the head it left (ADR 0033): no lock first.
    if app.state.lean_case_read:
        assert len(rounds) == 1, rounds
        assert not any("audit_staged" in statement for statement in rounds), rounds
    else:  # PostgreSQL moves the rows by their links in one statement
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
    rounds: list[str] = []
    with counting(app, rounds) as remembered:
        await new_case(client, town.referrer)
        await app.state.sealer.sealed()
    if app.state.lean_intake:  # PostgreSQL: the sealer's round writes it (ADR 0032)
        assert remembered == [], remembered
        claims = [s for s in rounds if "INSERT INTO idempotency_record" in s]
        assert len(claims) == 1, rounds
        assert "INSERT INTO case_file" in claims[0]
    else:
        assert len(remembered) == 4, remembered
    tag = await etag(client, town.coordinator, case_id)
    moving: list[str] = []
    with counting(app, moving) as transition:
        moved = await client.post(
            f"/api/v1/cases/{case_id}/transitions",
            json={"to": "screening"},
            headers={**town.coordinator.headers, "If-Match": tag},
        )
    assert moved.status_code == 200, moved.text
    if app.state.lean_transition:
        # PostgreSQL: the case with the facts and the records, and the actor's check, in one
        # statement; the sealer's round makes the move with its event (ADR 0032)
        assert len(transition) == 1, transition
        assert any("INSERT INTO case_transition" in s for s in moving), moving
    else:
        # the actor; the case with the lifecycle's facts about it and its records for the
        # answer; the version bump; the transition's record; the audit event
        assert len(transition) == 5, transition


# --- every other read route -------------------------------------------------------------------


async def _grows_not(app, client, headers: dict, urls: list[str], grow) -> None:
    """Counts each url's statements, grows what they return, counts again: the same."""
    before = [(await _statements(app, client, url, headers))[0] for url in urls]
    await grow()
    after = [await _statements(app, client, url, headers) for url in urls]
    for url, small, (large, statements) in zip(urls, before, after, strict=True):
        assert large == small, (url, statements)


async def test_assessments_and_the_export_do_not_grow_with_the_records(app, client, town):
    coordinator = town.coordinator.headers
    case_id = await new_case(client, town.referrer)
    await force_state(app, case_id, "assessment")
    url = f"/api/v1/cases/{case_id}"
    factors = {"factors": [{"dimension": "intent", "factor": "stated_intent", "score": 1}]}
    note = {"section": "general", "body": "Synthetic note for counting statements."}

    async def add_records(count: int) -> None:
        for _ in range(count):
            added = await client.post(f"{url}/assessments", json=factors, headers=coordinator)
            assert added.status_code == 201, added.text
            added = await client.post(f"{url}/notes", json=note, headers=coordinator)
            assert added.status_code == 201, added.text

    await add_records(1)
    # the export also carries the case's access log, which every request above lengthens
    urls = [f"{url}/assessments", f"{url}/export"]
    await _grows_not(app, client, coordinator, urls, lambda: add_records(8))
    assert len((await client.get(f"{url}/assessments", headers=coordinator)).json()) == 9
    exported = (await client.get(f"{url}/export", headers=coordinator)).json()
    assert len(exported["case"]["sections"]["general"]["notes"]) == 9


async def test_the_worklist_does_not_grow_with_the_reviews(app, client, town):
    coordinator = town.coordinator.headers
    due = {"due_on": date.today().isoformat()}

    async def add_reviews(count: int) -> None:
        for _ in range(count):
            case_id = await new_case(client, town.referrer)
            await force_state(app, case_id, "support")
            url = f"/api/v1/cases/{case_id}/reviews"
            assert (await client.post(url, json=due, headers=coordinator)).status_code == 201

    await add_reviews(1)
    await _grows_not(app, client, coordinator, ["/api/v1/worklist"], lambda: add_reviews(6))
    assert len((await client.get("/api/v1/worklist", headers=coordinator)).json()) == 7


async def test_panel_meetings_do_not_grow_with_the_meetings(app, client, town):
    coordinator = town.coordinator.headers
    meeting = {"meeting_date": date.today().isoformat(), "attendance": ["police", "health"]}

    async def add_meetings(count: int) -> None:
        for _ in range(count):
            made = await client.post("/api/v1/panel-meetings", json=meeting, headers=coordinator)
            assert made.status_code == 201, made.text

    await add_meetings(1)
    url = "/api/v1/panel-meetings?limit=50"
    await _grows_not(app, client, coordinator, [url], lambda: add_meetings(9))
    assert len((await client.get(url, headers=coordinator)).json()["items"]) == 10


async def test_the_break_glass_queue_does_not_grow_with_the_grants(
    app, client, world, town, signed_in
):
    outsider = (await make_town(client, world)).coordinator
    _, auditor = await signed_in(Role.auditor)
    reason = {"reason": "Neighbouring municipality reports the same young person today."}

    opened: set[str] = set()

    async def break_glass(count: int) -> None:
        for _ in range(count):
            case_id = await new_case(client, town.referrer)
            url = f"/api/v1/cases/{case_id}/break-glass"
            granted = await client.post(url, json=reason, headers=outsider.headers)
            assert granted.status_code == 201, granted.text
            opened.add(case_id)

    await break_glass(1)
    queue = "/api/v1/audit/break-glass?status=all"
    await _grows_not(app, client, auditor, [queue], lambda: break_glass(6))
    listed = (await client.get(queue, headers=auditor)).json()  # every grant, not only ours
    assert len(opened) == 7
    assert opened <= {grant["case_id"] for grant in listed}


async def test_admin_lists_do_not_grow_with_the_page(app, client, world, signed_in):
    _, admin = await signed_in(Role.admin)  # national: every town, organisation and account
    municipality = await world.municipality()
    for _ in range(9):
        await world.municipality()
        await world.organisation(Agency.health, municipality)
        await world.account(Role.referrer, municipality=municipality)
    for kind in ("municipalities", "organisations", "users"):
        url = f"/api/v1/admin/{kind}"
        small, _ = await _statements(app, client, f"{url}?limit=1", admin)
        large, statements = await _statements(app, client, f"{url}?limit=100", admin)
        page = (await client.get(f"{url}?limit=100", headers=admin)).json()["items"]
        assert len(page) >= 10, kind
        assert large == small, (kind, statements)


async def test_the_list_of_walks_does_not_grow_with_the_walks(app, client, signed_in):
    account, auditor = await signed_in(Role.auditor)

    async def walks(count: int) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            for _ in range(count):
                session.add(AuditVerification(requested_by=account.id, status="ok"))

    await walks(1)
    await _grows_not(
        app, client, auditor, ["/api/v1/audit/verifications?limit=50"], lambda: walks(8)
    )
    listed = (await client.get("/api/v1/audit/verifications?limit=50", headers=auditor)).json()
    assert len(listed) >= 9


async def test_the_list_of_snapshot_builds_does_not_grow_with_the_builds(app, client, signed_in):
    account, analyst = await signed_in(Role.national_analyst, agency=Agency.municipality)
    url = "/api/v1/stats/snapshot-builds?limit=50"

    async def builds(count: int) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            for _ in range(count):
                session.add(
                    StatsSnapshotBuild(requested_by=account.id, as_of=date.today(), status="failed")
                )

    await builds(1)
    await _grows_not(app, client, analyst, [url], lambda: builds(8))
    assert len((await client.get(url, headers=analyst)).json()) >= 9


# Every GET route, and the test above that holds its statement count still as what it
# returns grows. A new GET route must be named here, with its test or with why it has none.
_DETAIL = test_case_detail_and_notes_statement_counts_do_not_grow_with_the_notes
_RECORDS = test_assessments_and_the_export_do_not_grow_with_the_records
COUNTED = {
    "/api/v1/cases": test_case_list_statement_count_does_not_grow_with_the_page,
    "/api/v1/cases/{case_id}": _DETAIL,
    "/api/v1/cases/{case_id}/notes": _DETAIL,
    "/api/v1/cases/{case_id}/assessments": _RECORDS,
    "/api/v1/cases/{case_id}/export": _RECORDS,
    "/api/v1/worklist": test_the_worklist_does_not_grow_with_the_reviews,
    "/api/v1/panel-meetings": test_panel_meetings_do_not_grow_with_the_meetings,
    "/api/v1/audit/events": test_audit_search_statement_count_does_not_grow_with_the_page,
    "/api/v1/audit/break-glass": test_the_break_glass_queue_does_not_grow_with_the_grants,
    "/api/v1/audit/verifications": test_the_list_of_walks_does_not_grow_with_the_walks,
    "/api/v1/stats/snapshot-builds": test_the_list_of_snapshot_builds_does_not_grow_with_the_builds,
    **{
        f"/api/v1/admin/{kind}": test_admin_lists_do_not_grow_with_the_page
        for kind in ("municipalities", "organisations", "users")
    },
}
NOT_COUNTED = {
    "/livez": "the framework's ceiling: no database",
    "/readyz": "one fixed probe of the database and the migration head",
    "/api/v1/auth/me": "the actor's own account, read with the actor",
    "/api/v1/panel-meetings/{meeting_id}": "one meeting's row; its decisions are not in it",
    **{
        f"/api/v1/admin/{path}": "one row, with nothing listed under it"
        for path in (
            "municipalities/{municipality_id}",
            "organisations/{organisation_id}",
            "users/{user_id}",
        )
    },
    "/api/v1/stats/catalogue": "the latest snapshot and the policy; no rows listed",
    "/api/v1/stats/{measure}": "one published table: its cells in one statement (stats.service)",
    "/api/v1/audit/verifications/{verification_id}": "one walk's row",
    "/api/v1/stats/snapshot-builds/{build_id}": "one build's row, with its snapshot's",
}


def test_every_read_route_has_its_statement_count_held_or_says_why_not(app):
    read_routes = {info.path for info in api_routes(app) if info.method == "GET"}
    assert read_routes == set(COUNTED) | set(NOT_COUNTED)
    assert not set(COUNTED) & set(NOT_COUNTED)
