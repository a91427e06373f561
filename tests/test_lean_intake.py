"""The lean intake (ADR 0032): on PostgreSQL, a referral from an actor this worker has already
authenticated is written by the sealer's round, in the round's transaction with its audit
event, and the request sends no statement of its own. It must answer exactly as the full
path does, write the same case and record the same event, and leave to the full path,
having written nothing, every request it cannot answer so: a replayed or reused key, a
changed or signed-out account, a body or header the full path refuses. No referral is
written without its event, nor an event without its referral."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, update

from referral.crypto import open_field
from referral.models import AuthSession, CaseFile, IdempotencyRecord
from referral.models.base import utcnow
from tests.case_world import make_town, referral_body
from tests.helpers import (
    assert_trail_whole,
    event_facts,
    observed,
    refusing_events_of,
)

URL = "/api/v1/referrals"


@pytest.fixture
async def town(client, world):
    town = await make_town(client, world)
    for actor in (town.referrer, town.coordinator):  # signed in, and seen by this worker
        assert (await client.get("/api/v1/cases", headers=actor.headers)).status_code == 200
    return town


async def _refer(
    app, client, actor, body: dict | None = None, key: str | None = None, **sent: dict
):
    """A referral as `actor` sends it; `sent`: other headers and a raw body instead."""
    headers = {**actor.headers, "Idempotency-Key": key or uuid.uuid4().hex}
    headers |= sent.pop("headers", {})
    payload = sent if sent else {"json": body or referral_body()}
    return await observed(app, client, "POST", URL, headers, **payload)


async def _count(app, model, **where) -> int:
    statement = select(func.count()).select_from(model)
    for column, value in where.items():
        statement = statement.where(getattr(model, column) == value)
    async with app.state.sessionmaker() as session:
        return (await session.exec(statement)).one()[0]


async def _case_row(app, case_id: str) -> dict:
    """The case as written, its sealed columns opened, less what differs by its id and time."""
    async with app.state.sessionmaker() as session:
        case = await session.get(CaseFile, uuid.UUID(case_id))
    ring = app.state.case_keys.ring
    row = case.model_dump()
    for name in list(row):
        if name.endswith("_enc") and row[name] is not None:
            row[name] = open_field(ring, case, name[: -len("_enc")])
    for differs in ("id", "stat_person", "submitted_at", "created_at", "updated_at"):
        row.pop(differs)
    return row


@pytest.mark.postgres_only
async def test_a_referral_is_written_by_the_round_as_the_full_path_writes_it(app, client, town):
    body = referral_body()
    for referrer in (town.referrer, town.coordinator):
        lean, statements, events = await _refer(app, client, referrer, body)
        assert lean.status_code == 201, lean.text
        assert statements == []  # no statement of its own: the round wrote it
        lean_intake, app.state.lean_intake = app.state.lean_intake, None
        try:
            full, full_statements, full_events = await _refer(app, client, referrer, body)
        finally:
            app.state.lean_intake = lean_intake
        assert full.status_code == 201, full.text
        assert len(full_statements) == 4  # actor, claim, case, event: the full path
        assert lean.headers["location"] == f"/api/v1/cases/{lean.json()['id']}"
        for header in ("content-type", "cache-control"):
            assert lean.headers[header] == full.headers[header], header
        assert lean.json().keys() == full.json().keys()
        assert lean.json()["stage"] == full.json()["stage"]
        assert [e.resource_ids for e in events] == [[lean.json()["id"]]]
        assert [event_facts(e)[:-4] for e in events] == [event_facts(e)[:-4] for e in full_events]
        assert [event_facts(e)[-3:] for e in events] == [event_facts(e)[-3:] for e in full_events]
        assert await _case_row(app, lean.json()["id"]) == await _case_row(app, full.json()["id"])
        read = await client.get(lean.headers["location"], headers=town.coordinator.headers)
        assert read.status_code == 200
        assert read.json()["subject"]["given_name"] == body["subject"]["given_name"]
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_a_key_used_before_is_the_full_paths_replay_or_refusal(app, client, town):
    key, body = uuid.uuid4().hex, referral_body()
    first, _, events = await _refer(app, client, town.referrer, body, key)
    assert first.status_code == 201
    assert [e.action for e in events] == ["case.create"]
    again, statements, events = await _refer(app, client, town.referrer, body, key)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert len(statements) > 1  # the round wrote nothing; the full path replayed
    assert [(e.action, e.resource_ids) for e in events] == [
        ("case.create_replayed", [first.json()["id"]])
    ]
    other = referral_body()
    reused, _, events = await _refer(app, client, town.referrer, other, key)
    assert reused.status_code == 422
    assert reused.json()["errors"][0]["type"] == "idempotency_key_reused"
    assert events == []  # a refused body is not an access: not audited
    assert await _count(app, CaseFile, referrer_user_id=town.referrer.id) == 1
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_the_same_key_twice_at_once_makes_one_case(app, client, town):
    key, body = uuid.uuid4().hex, referral_body()
    answers = await asyncio.gather(
        *(_refer(app, client, town.referrer, body, key) for _ in range(4))
    )
    assert [answer.status_code for answer, _, _ in answers] == [201] * 4
    assert len({answer.json()["id"] for answer, _, _ in answers}) == 1
    actions = sorted(e.action for _, _, events in answers for e in events)
    assert actions == ["case.create"] + ["case.create_replayed"] * 3
    assert await _count(app, CaseFile, referrer_user_id=town.referrer.id) == 1
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_a_session_ended_since_is_refused_by_the_full_path_and_nothing_is_written(
    app, client, town
):
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession)
            .where(AuthSession.user_id == town.referrer.id)
            .values(revoked_at=utcnow())
        )
    response, _, events = await _refer(app, client, town.referrer)
    assert response.status_code == 401
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 401)]
    assert await _count(app, CaseFile, referrer_user_id=town.referrer.id) == 0
    assert await _count(app, IdempotencyRecord, user_id=town.referrer.id) == 0


@pytest.mark.postgres_only
async def test_what_the_full_path_refuses_is_refused_by_it(app, client, town):
    bad_body = referral_body(urgency="whenever")
    refusals = [
        (await _refer(app, client, town.referrer, bad_body), 422),
        (await _refer(app, client, town.referrer, key="short"), 400),
        (
            await _refer(
                app,
                client,
                town.referrer,
                content=b'{"subject": ',
                headers={"Content-Type": "application/json"},
            ),
            422,
        ),
    ]
    no_key = await observed(app, client, "POST", URL, town.referrer.headers, json=referral_body())
    refusals.append((no_key, 400))
    as_text = await _refer(
        app, client, town.referrer, content=b"{}", headers={"Content-Type": "text/plain"}
    )
    refusals.append((as_text, 415))
    for (response, _, events), status in refusals:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert events == []
    panel = town.panel[next(iter(town.panel))]
    assert (await client.get("/api/v1/cases", headers=panel.headers)).status_code == 200
    denied, _, events = await _refer(app, client, panel)
    assert denied.status_code == 403
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 403)]
    assert await _count(app, CaseFile, municipality_id=town.municipality_id) == 0
    for actor in (town.referrer, panel):
        assert await _count(app, IdempotencyRecord, user_id=actor.id) == 0


@pytest.mark.postgres_only
async def test_no_referral_is_written_without_its_event(app, client, town):
    key, body = uuid.uuid4().hex, referral_body()
    async with refusing_events_of(app, "case.create") as failing:
        response, statements, events = await _refer(app, failing, town.referrer, body, key)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert statements == []
    assert events == []
    assert await _count(app, CaseFile, referrer_user_id=town.referrer.id) == 0
    assert await _count(app, IdempotencyRecord, user_id=town.referrer.id) == 0
    again, _, events = await _refer(app, client, town.referrer, body, key)  # the retry
    assert again.status_code == 201
    assert [e.action for e in events] == ["case.create"]
    await assert_trail_whole(app)
