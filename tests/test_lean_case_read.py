"""The lean case read (ADR 0028, 0031): on PostgreSQL, a case read by an actor this worker
has already authenticated is one statement on the driver, its audit event written by the
sealer's round. It must answer exactly as the full path does, with the same audit event,
and leave to the full path, having written nothing,
every request it cannot answer so: a changed or signed-out account, a case out of scope or
reached by break-glass. Without its event, no case data leaves."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from referral.auth.dependencies import KnownActors
from referral.auth.tokens import TokenClaims
from referral.authz.actor import Actor as AuthzActor
from referral.models import AuthSession, User
from referral.models.base import utcnow
from referral.models.enums import Agency
from tests.case_world import force_state, make_town, new_case, screen_and_assess
from tests.helpers import (
    assert_trail_whole,
    event_facts,
    garbled_name_of,
    observed_get,
    refusing_events_of,
)

REASON = "Synthetic reason: the person is known to our service and at immediate risk."


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


@pytest.fixture
async def case_at_panel(app, client, town) -> str:
    """A case before the panel, with a screening, an assessment and notes in three sections."""
    case_id = await new_case(client, town.referrer)
    for section in ("general", "police", "health"):
        added = await client.post(
            f"/api/v1/cases/{case_id}/notes",
            headers=town.coordinator.headers,
            json={"section": section, "body": f"Synthetic {section} note."},
        )
        assert added.status_code == 201, added.text
    assessment = {
        "factors": [{"dimension": "intent", "factor": "a_b", "score": 1}],
        "summary": "Synthetic summary",
    }
    await screen_and_assess(client, app, town.coordinator, case_id, "Screened", assessment)
    return case_id


async def _read(app, client, headers: dict, case_id: str):
    return await observed_get(app, client, f"/api/v1/cases/{case_id}", headers)


@pytest.mark.postgres_only
async def test_every_reader_is_answered_in_one_statement_as_the_full_path_answers(
    app, client, town, case_at_panel
):
    readers = {"coordinator": town.coordinator} | {
        f"panel.{agency.value}": town.panel[agency] for agency in Agency
    }
    for reader in readers.values():  # signed in, but not yet seen by this worker
        response, statements, _ = await _read(app, client, reader.headers, case_at_panel)
        assert response.status_code == 200  # the full path answers, and remembers the actor
    lean_answers = {}
    for name, reader in readers.items():
        response, statements, events = await _read(app, client, reader.headers, case_at_panel)
        assert response.status_code == 200, (name, response.text)
        assert len(statements) == 1, (name, statements)  # the lean read, not the full path
        assert [e.outcome for e in events] == ["allowed"], name
        lean_answers[name] = response, events[0]

    lean_read, app.state.lean_case_read = app.state.lean_case_read, None
    try:
        full_answers = {
            name: await _read(app, client, reader.headers, case_at_panel)
            for name, reader in readers.items()
        }
    finally:
        app.state.lean_case_read = lean_read
    for name, (response, statements, events) in full_answers.items():
        assert response.status_code == 200, (name, response.text)
        assert len(statements) == 3, (name, statements)  # actor, case, event: the full path
        lean, lean_event = lean_answers[name]
        assert lean.json() == response.json(), name
        assert lean.headers["etag"] == response.headers["etag"], name
        assert lean.headers["content-type"] == response.headers["content-type"], name
        assert lean.headers["cache-control"] == response.headers["cache-control"], name
        assert [event_facts(e) for e in events] == [event_facts(lean_event)], name
    # what each agency reads differs, and the coordinator alone sees possible re-referrals
    sections = {name: set(answer.json()["sections"]) for name, (answer, _) in lean_answers.items()}
    assert "police" in sections["coordinator"]
    assert "police" not in sections["panel.education"]
    assert "possible_rereferrals" in lean_answers["coordinator"][0].json()
    assert "possible_rereferrals" not in lean_answers["panel.police"][0].json()


@pytest.mark.postgres_only
async def test_lean_reads_leave_the_trail_whole(app, client, town, case_at_panel):
    for _ in range(5):
        response, statements, _ = await _read(app, client, town.coordinator.headers, case_at_panel)
        assert response.status_code == 200
        assert len(statements) == 1
    await assert_trail_whole(app)


@pytest.mark.postgres_only
async def test_an_account_moved_since_it_was_remembered_is_decided_afresh(
    app, client, world, town, case_at_panel
):
    """A change of municipality that (wrongly) left the session in force: the remembered
    actor no longer matches its row, so the lean read answers nothing and the full path,
    reading the account as it is now, refuses the case of the old municipality."""
    response, statements, _ = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert response.status_code == 200
    assert len(statements) == 1
    elsewhere = await world.municipality()
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(User).where(User.id == town.coordinator.id).values(municipality_id=elsewhere.id)
        )
    response, statements, events = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert response.status_code == 404
    assert len(statements) > 1  # the lean read's, then the full path's
    assert [(e.outcome, e.status_code, e.actor_municipality_id) for e in events] == [
        ("denied", 404, elsewhere.id)
    ]


@pytest.mark.postgres_only
async def test_a_session_ended_since_is_refused_by_the_full_path(app, client, town, case_at_panel):
    response, statements, _ = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert response.status_code == 200
    assert len(statements) == 1
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession)
            .where(AuthSession.user_id == town.coordinator.id)
            .values(revoked_at=utcnow())
        )
    response, _, events = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 401)]


@pytest.mark.postgres_only
async def test_cases_out_of_scope_or_reached_by_break_glass_are_the_full_paths(
    app, client, world, town, case_at_panel
):
    elsewhere = await make_town(client, world)
    outsider = elsewhere.coordinator
    other_case = await new_case(client, elsewhere.referrer)
    assert (await client.get(f"/api/v1/cases/{other_case}", headers=outsider.headers)).is_success

    response, _, events = await _read(app, client, outsider.headers, case_at_panel)
    assert response.status_code == 404
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 404)]
    missing, _, events = await _read(app, client, outsider.headers, str(uuid.uuid4()))
    assert missing.status_code == 404
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 404)]

    granted = await client.post(
        f"/api/v1/cases/{case_at_panel}/break-glass",
        json={"reason": REASON},
        headers=outsider.headers,
    )
    assert granted.status_code == 201, granted.text
    response, statements, events = await _read(app, client, outsider.headers, case_at_panel)
    assert response.status_code == 200
    assert len(statements) > 1  # the lean read found nothing and left it to the full path
    assert [(e.outcome, e.purpose) for e in events] == [("allowed", "break_glass")]


@pytest.mark.postgres_only
async def test_a_referrer_and_a_panel_member_before_the_panel_take_the_full_path(app, client, town):
    case_id = await new_case(client, town.referrer)
    response, statements, events = await _read(app, client, town.referrer.headers, case_id)
    assert response.status_code == 200
    assert "stage" in response.json()
    assert len(statements) > 1
    assert [e.outcome for e in events] == ["allowed"]
    # an education panel member sees cases once they reach the panel: not yet
    member = town.panel[Agency.education]
    response, _, events = await _read(app, client, member.headers, case_id)
    assert response.status_code == 404
    assert [(e.outcome, e.status_code) for e in events] == [("denied", 404)]
    await force_state(app, case_id, "panel")
    response, statements, _ = await _read(app, client, member.headers, case_id)
    assert response.status_code == 200
    assert len(statements) == 1


@pytest.mark.postgres_only
async def test_no_case_data_leaves_without_its_audit_event(app, client, town, case_at_panel):
    response, statements, _ = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert response.status_code == 200
    assert len(statements) == 1
    async with refusing_events_of(app, "case.read") as failing:
        response, _, events = await _read(app, failing, town.coordinator.headers, case_at_panel)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Synthetic" not in response.text
    assert events == []
    again, statements, events = await _read(app, client, town.coordinator.headers, case_at_panel)
    assert again.status_code == 200
    assert len(statements) == 1
    assert [e.outcome for e in events] == ["allowed"]


@pytest.mark.postgres_only
async def test_a_case_that_cannot_be_built_records_no_read(app, client, town, case_at_panel):
    await _read(app, client, town.coordinator.headers, case_at_panel)
    async with garbled_name_of(app, case_at_panel) as failing:
        response, statements, events = await _read(
            app, failing, town.coordinator.headers, case_at_panel
        )
    assert response.status_code == 500
    assert len(statements) == 1  # the case was read, and failed to decrypt: no event
    assert [e for e in events if e.action == "case.read"] == []


# --- pure rules ------------------------------------------------------------------------------


def _actor(session_id: uuid.UUID, user_id: uuid.UUID | None = None) -> AuthzActor:
    return AuthzActor(
        user_id=user_id or uuid.uuid4(),
        username="synthetic",
        role="coordinator",
        organisation_id=uuid.uuid4(),
        agency="municipality",
        municipality_id=uuid.uuid4(),
        session_id=session_id,
    )


def _claims(actor: AuthzActor, subject: uuid.UUID | None = None) -> TokenClaims:
    return TokenClaims(
        subject=subject or actor.user_id,
        session_id=actor.session_id,
        token_id=uuid.uuid4(),
        token_type="access",
        expires_at=utcnow(),
    )


def test_known_actors_are_found_by_session_and_subject_and_forgotten_oldest_first():
    known = KnownActors(size=2)
    first, second, third = (_actor(uuid.uuid4()) for _ in range(3))
    known.remember(first)
    known.remember(second)
    assert known.of(_claims(first)) == first  # now the most recently used
    assert known.of(_claims(first, subject=uuid.uuid4())) is None  # another user's token
    known.remember(third)
    assert known.of(_claims(second)) is None
    assert known.of(_claims(first)) == first
    assert known.of(_claims(third)) == third
