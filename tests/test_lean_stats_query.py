"""The lean statistics query (ADR 0029, 0031): on PostgreSQL, a query asked before, by an actor
this worker has already authenticated and who is not limited to one municipality, is answered
from the same snapshot with no statement of its own: the sealer's round that writes its audit
event checks the actor and the snapshot first. It must answer exactly as the full path
does, with the same event, never answer from a snapshot that is no longer the latest, and
leave everything else to the full path having written nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from types import SimpleNamespace

import pytest
from sqlalchemy import text, update

from referral.models import AuthSession, User
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from referral.stats.lean_query import PublishedAnswer, PublishedAnswers
from tests.case_world import make_town
from tests.conftest import bearer, login
from tests.helpers import (
    assert_trail_whole,
    built,
    counting,
    event_facts,
    observed_get,
    refusing_events_of,
)

URL = "/api/v1/stats/referrals"
QUERY = {"period": str(date.today().year - 1), "breakdown": "concern"}


@pytest.fixture
async def national(client, world):
    """A national analyst, signed in, and a snapshot published as of today."""
    account = await world.account(Role.national_analyst, agency=Agency.municipality)
    headers = bearer(await login(client, account))
    build = await built(client, headers, as_of=date.today().isoformat())
    assert build["status"] == "published", build
    return SimpleNamespace(id=account.id, headers=headers)


async def _ask(app, client, headers: dict, params: dict = QUERY, **extra_headers: str):
    return await observed_get(app, client, URL, {**headers, **extra_headers}, params=params)


@pytest.mark.postgres_only
async def test_a_query_asked_again_is_one_statement_answering_as_the_full_path(
    app, client, national
):
    first, statements, events = await _ask(app, client, national.headers)
    assert first.status_code == 200, first.text
    assert len(statements) > 1  # the full path: the actor, the cells, the event
    assert [e.outcome for e in events] == ["allowed"]

    rounds: list[str] = []
    with counting(app, rounds):
        lean, statements, lean_events = await _ask(app, client, national.headers)
    assert lean.status_code == 200
    assert statements == []  # none of its own: the round that writes its event checks
    (check,) = [s for s in rounds if "auth_session" in s]
    assert "stats_snapshot" in check

    lean_query, app.state.lean_stats_query = app.state.lean_stats_query, None
    try:
        full, statements, full_events = await _ask(app, client, national.headers)
    finally:
        app.state.lean_stats_query = lean_query
    assert len(statements) > 1
    assert lean.content == full.content == first.content
    assert lean.headers["content-type"] == full.headers["content-type"]
    assert lean.json()["snapshot_id"] == lean_events[0].resource_ids[0]
    assert [event_facts(e) for e in lean_events] == [event_facts(e) for e in full_events]
    assert lean_events[0].purpose.startswith("cells=")


@pytest.mark.postgres_only
async def test_a_newer_publication_is_never_answered_from_the_older_one(app, client, national):
    before, _, _ = await _ask(app, client, national.headers)
    _, statements, _ = await _ask(app, client, national.headers)
    assert statements == []  # the lean query
    newer = await built(client, national.headers, as_of=date.today().isoformat())
    assert newer["status"] == "published"

    after, statements, events = await _ask(app, client, national.headers)
    assert after.status_code == 200
    assert len(statements) > 1  # the round found a newer snapshot; the full path answered
    assert after.json()["snapshot_id"] == newer["snapshot"]["id"] != before.json()["snapshot_id"]
    assert [(e.outcome, e.resource_ids) for e in events] == [("allowed", [newer["snapshot"]["id"]])]
    lean, statements, _ = await _ask(app, client, national.headers)
    assert statements == []  # the lean query
    assert lean.json()["snapshot_id"] == newer["snapshot"]["id"]


@pytest.mark.postgres_only
async def test_an_account_changed_or_signed_out_since_is_decided_afresh(
    app, client, world, national
):
    await _ask(app, client, national.headers)
    _, statements, _ = await _ask(app, client, national.headers)
    assert statements == []  # the lean query
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(update(User).where(User.id == national.id).values(role=Role.auditor))
    refused, _, events = await _ask(app, client, national.headers)
    assert refused.status_code == 403
    assert [(e.outcome, e.status_code, e.actor_role) for e in events] == [
        ("denied", 403, Role.auditor.value)
    ]

    other = await world.account(Role.national_analyst, agency=Agency.municipality)
    headers = bearer(await login(client, other))
    await _ask(app, client, headers)
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession).where(AuthSession.user_id == other.id).values(revoked_at=utcnow())
        )
    refused, _, events = await _ask(app, client, headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 401)]


@pytest.mark.postgres_only
async def test_a_municipal_analyst_a_csv_and_a_new_or_bad_query_take_the_full_path(
    app, client, world, national
):
    town = await make_town(client, world)
    republished = await built(client, national.headers, as_of=date.today().isoformat())
    assert republished["status"] == "published"  # with the new town in it
    async with app.state.sessionmaker() as s:
        code = (
            await s.exec(
                text("SELECT code FROM municipality WHERE id = :id"),
                params={"id": town.municipality_id},
            )
        ).one()[0]
    own = {"period": QUERY["period"], "geography": "municipality", "area": code}
    for _ in range(2):
        response, statements, events = await _ask(app, client, town.analyst.headers, own)
        assert response.status_code == 200, response.text
        assert len(statements) > 1
        assert [e.outcome for e in events] == ["allowed"]
    # the same query, answered to the national analyst, is still not another town's to see
    for _ in range(2):
        await _ask(app, client, national.headers, own)
    _, statements, _ = await _ask(app, client, national.headers, own)
    assert statements == []  # the lean query
    elsewhere = await make_town(client, world)
    await _ask(app, client, elsewhere.analyst.headers, own)  # now known to this worker
    refused, statements, events = await _ask(app, client, elsewhere.analyst.headers, own)
    assert refused.status_code == 403
    assert len(statements) > 1
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 403)]
    response, statements, _ = await _ask(app, client, town.analyst.headers, own)
    assert response.status_code == 200
    assert len(statements) > 1

    await _ask(app, client, national.headers)
    for _ in range(2):
        response, statements, _ = await _ask(app, client, national.headers, accept="text/csv")
        assert response.headers["content-type"].startswith("text/csv")
        assert len(statements) > 1

    for _ in range(2):
        response, statements, events = await _ask(
            app, client, national.headers, {**QUERY, "municipality": "x"}
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert events == []  # a bad request is refused before anything is read

    asked_anew = {"period": QUERY["period"], "breakdown": "gender"}
    response, statements, _ = await _ask(app, client, national.headers, asked_anew)
    assert response.status_code == 200
    assert len(statements) > 1
    response, statements, _ = await _ask(app, client, national.headers, asked_anew)
    assert statements == []  # the lean query


@pytest.mark.postgres_only
async def test_queries_alike_held_by_one_round_are_checked_once(app, client, national):
    await _ask(app, client, national.headers)
    rounds: list[str] = []
    with counting(app, rounds) as statements:
        answers = await asyncio.gather(
            *(client.get(URL, params=QUERY, headers=national.headers) for _ in range(12))
        )
    assert [a.status_code for a in answers] == [200] * 12
    assert statements == []
    checks = [s for s in rounds if "auth_session" in s]
    assert 1 <= len(checks) < 12, len(checks)  # one per round, not one per query
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_lean_queries_leave_the_trail_whole(app, client, national):
    for _ in range(5):
        response, _, _ = await _ask(app, client, national.headers)
        assert response.status_code == 200
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_no_statistics_leave_without_their_audit_event(app, client, national):
    await _ask(app, client, national.headers)
    _, statements, _ = await _ask(app, client, national.headers)
    assert statements == []  # the lean query
    async with refusing_events_of(app, "stats.query") as failing:
        response, statements, events = await _ask(app, failing, national.headers)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "cells" not in response.text
    assert statements == []  # its round failed on the refused event; nothing sent
    assert events == []


# --- pure rules ------------------------------------------------------------------------------


def _answer(size: int) -> PublishedAnswer:
    return PublishedAnswer(uuid.uuid4(), b"x" * size, ("measure=referrals",), "cells=1")


def test_published_answers_forget_the_least_recently_used_beyond_their_bytes():
    answers = PublishedAnswers(max_bytes=100)
    first, second, third = _answer(40), _answer(40), _answer(40)
    answers.remember(("/a", b""), first)
    answers.remember(("/b", b""), second)
    assert answers.of(("/a", b"")) is first  # now the most recently used
    answers.remember(("/c", b""), third)  # 120 bytes: the least recently used goes
    assert answers.of(("/b", b"")) is None
    assert answers.of(("/a", b"")) is first
    assert answers.of(("/c", b"")) is third
    answers.remember(("/a", b""), second)  # replaced, not counted twice
    assert answers.of(("/a", b"")) is second
    assert answers.of(("/c", b"")) is third
    answers.remember(("/big", b""), _answer(101))  # larger than the whole: never kept
    assert answers.of(("/big", b"")) is None
    assert answers.of(("/c", b"")) is third
    assert answers.of(("/a", b"")) is second
    assert answers.of(("/a", b"period=2025")) is None  # the query string is part of the key
