"""The lean transition (ADR 0032): on PostgreSQL, a transition asked by an actor this worker
has already authenticated is decided on the case as one statement reads it, and written by
the sealer's round with its audit event, only while the case is still at the version read.
It must answer and record exactly as the full path does, and leave to the full path, having
written nothing, every request it cannot answer so: a stale If-Match, a move the lifecycle
refuses, a changed account, a move that writes post-exit reviews. No transition is written
without its event."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, update

from referral.models import AuthSession, CaseFile, CaseTransition
from referral.models.base import utcnow
from tests.case_world import etag, force_state, make_town, new_case, referral_body
from tests.helpers import assert_trail_whole, event_facts, observed, refusing_events_of


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


async def _move(app, client, actor, case_id: str, version: str | None = None, **body):
    headers = {**actor.headers, "If-Match": version or await etag(client, actor, case_id)}
    url = f"/api/v1/cases/{case_id}/transitions"
    return await observed(app, client, "POST", url, headers, json=body)


async def _state(app, case_id: str) -> tuple[str, int, int]:
    """The case's state and version, and how many transitions it has recorded."""
    async with app.state.sessionmaker() as session:
        case = await session.get(CaseFile, uuid.UUID(case_id))
        moves = await session.exec(
            select(func.count())
            .select_from(CaseTransition)
            .where(CaseTransition.case_id == case.id)
        )
        return case.state, case.version, moves.one()[0]


@pytest.mark.postgres_only
async def test_a_transition_is_written_by_the_round_as_the_full_path_writes_it(app, client, town):
    coordinator = town.coordinator
    body = referral_body()
    lean_case = await new_case(client, town.referrer, body)
    full_case = await new_case(client, town.referrer, body)
    lean, statements, events = await _move(app, client, coordinator, lean_case, to="screening")
    assert lean.status_code == 200, lean.text
    assert len(statements) == 1, statements  # the case read; the round wrote the move
    read = await client.get(f"/api/v1/cases/{lean_case}", headers=coordinator.headers)
    assert read.json() == lean.json()  # the answer is the case as it now is
    assert read.headers["etag"] == lean.headers["etag"]
    lean_transition, app.state.lean_transition = app.state.lean_transition, None
    try:
        full, full_statements, full_events = await _move(
            app, client, coordinator, full_case, to="screening"
        )
    finally:
        app.state.lean_transition = lean_transition
    assert full.status_code == 200, full.text
    assert len(full_statements) == 5, full_statements  # the full path
    assert lean.headers["etag"] == full.headers["etag"] == '"2"'
    for header in ("content-type", "cache-control"):
        assert lean.headers[header] == full.headers[header], header
    # the two cases differ in their ids and times, and each is the other's re-referral
    differs = ("id", "reference", "submitted_at", "entered", "possible_rereferrals")
    assert {k: v for k, v in lean.json().items() if k not in differs} == {
        k: v for k, v in full.json().items() if k not in differs
    }
    (event,), (full_event,) = events, full_events
    assert event_facts(event)[:8] == event_facts(full_event)[:8]
    assert event_facts(event)[9:] == event_facts(full_event)[9:]
    assert event.resource_ids[0] == lean_case
    assert await _state(app, lean_case) == await _state(app, full_case) == ("screening", 2, 1)
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_a_stale_version_or_a_refused_move_is_the_full_paths_answer(app, client, town):
    case_id = await new_case(client, town.referrer)
    await etag(client, town.coordinator, case_id)  # the coordinator, seen by this worker
    stale, _, events = await _move(app, client, town.coordinator, case_id, '"7"', to="screening")
    assert stale.status_code == 412
    assert events == []
    refused, statements, events = await _move(app, client, town.coordinator, case_id, to="panel")
    assert refused.status_code == 409
    assert refused.json()["state"] == "submitted"
    assert len(statements) > 1  # the lean read, then the full path
    assert events == []
    assert await _state(app, case_id) == ("submitted", 1, 0)


@pytest.mark.postgres_only
async def test_two_moves_from_one_version_at_once_make_one(app, client, town):
    case_id = await new_case(client, town.referrer)
    version = await etag(client, town.coordinator, case_id)
    answers = await asyncio.gather(
        *(_move(app, client, town.coordinator, case_id, version, to="screening") for _ in range(3))
    )
    # the others are answered by the full path once the move is made: their If-Match is
    # stale, whatever else the case now allows
    assert sorted(answer.status_code for answer, _, _ in answers) == [200, 412, 412]
    assert [e.action for _, _, events in answers for e in events] == ["case.transition"]
    assert await _state(app, case_id) == ("screening", 2, 1)
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_a_session_ended_since_is_refused_and_nothing_moves(app, client, town):
    case_id = await new_case(client, town.referrer)
    version = await etag(client, town.coordinator, case_id)
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession)
            .where(AuthSession.user_id == town.coordinator.id)
            .values(revoked_at=utcnow())
        )
    response, _, events = await _move(
        app, client, town.coordinator, case_id, version, to="screening"
    )
    assert response.status_code == 401
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 401)]
    assert await _state(app, case_id) == ("submitted", 1, 0)


@pytest.mark.postgres_only
async def test_no_transition_is_written_without_its_event(app, client, town):
    case_id = await new_case(client, town.referrer)
    version = await etag(client, town.coordinator, case_id)
    async with refusing_events_of(app, "case.transition") as failing:
        response, statements, events = await _move(
            app, failing, town.coordinator, case_id, version, to="screening"
        )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert len(statements) == 1
    assert events == []
    assert await _state(app, case_id) == ("submitted", 1, 0)
    again, _, events = await _move(app, client, town.coordinator, case_id, version, to="screening")
    assert again.status_code == 200
    assert [e.action for e in events] == ["case.transition"]
    assert await _state(app, case_id) == ("screening", 2, 1)
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_a_move_that_writes_post_exit_reviews_is_the_full_paths(app, client, town):
    case_id = await new_case(client, town.referrer)
    await force_state(app, case_id, "support")
    moved, statements, events = await _move(
        app, client, town.coordinator, case_id, to="monitoring", exit_reason="risk_reduced"
    )
    assert moved.status_code == 200, moved.text
    assert len(statements) > 1  # read lean, then written by the full path with the reviews
    assert sorted(r["months_after_exit"] for r in moved.json()["reviews"]) == [6, 12]
    assert [e.action for e in events] == ["case.transition"]
