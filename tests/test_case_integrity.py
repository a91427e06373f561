"""Illegal transitions (generated from the policy), idempotent intake, re-referrals,
concurrent writers, and what a raw dump of the database shows."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import func, select

from referral.cases.lifecycle import CaseFacts, TransitionRequest, evaluate
from referral.cases.repository import insert_case, insert_row
from referral.crypto import open_field
from referral.models import CaseFile, CaseTransition
from tests.case_world import etag, force_state, make_town, move, new_case, referral_body, submit


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


def _illegal_moves(workflow, state: str) -> list[tuple[str, str | None]]:
    """Every (to, outcome) a coordinator may not take from `state`, whatever the facts."""
    everything = CaseFacts(True, True, "adopt", True, True, True)
    moves = []
    for to in workflow.states:
        outcomes = list(workflow.closure_outcomes) if to == workflow.terminal else [None]
        for outcome in outcomes:
            request = TransitionRequest(to, outcome, "risk_reduced", immediate_risk=True)
            facts = everything
            if outcome in ("not_adopted", "signposted", "referred_to_police"):
                facts = CaseFacts(True, True, outcome, True, True, True)
            if not evaluate(workflow, "coordinator", state, request, facts).ok:
                moves.append((to, outcome))
    return moves


async def test_every_illegal_transition_is_409_and_changes_nothing(client, app, town):
    workflow = app.state.case_keys.workflow
    checked = 0
    for state in workflow.states:
        case_id = await new_case(client, town.referrer)
        await force_state(app, case_id, state)
        before = (
            await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
        ).json()
        for to, outcome in _illegal_moves(workflow, state):
            response = await client.post(
                f"/api/v1/cases/{case_id}/transitions",
                json={
                    "to": to,
                    "outcome": outcome,
                    "exit_reason": "risk_reduced",
                    "immediate_risk": True,
                },
                headers={**town.coordinator.headers, "If-Match": f'"{before["version"]}"'},
            )
            assert response.status_code == 409, (state, to, outcome, response.text)
            body = response.json()
            assert body["state"] == state
            assert isinstance(body["allowed"], list)
            checked += 1
        after = (
            await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
        ).json()
        assert after == before
    assert checked > 40


async def test_unknown_target_state_is_409_with_allowed_moves(client, town):
    case_id = await new_case(client, town.referrer)
    response = await client.post(
        f"/api/v1/cases/{case_id}/transitions",
        json={"to": "heaven"},
        headers={
            **town.coordinator.headers,
            "If-Match": await etag(client, town.coordinator, case_id),
        },
    )
    assert response.status_code == 409
    assert {m["to"] for m in response.json()["allowed"]} == {"screening", "closed"}


# --- idempotent intake ----------------------------------------------------------------------


async def _case_count(app, referrer_id) -> int:
    async with app.state.sessionmaker() as s:
        return (
            await s.exec(
                select(func.count())
                .select_from(CaseFile)
                .where(CaseFile.referrer_user_id == referrer_id)
            )
        ).one()


async def test_same_key_same_body_replays_the_first_response(client, app, town):
    body = referral_body()
    first = await submit(client, town.referrer, body, key="idem-key-0001")
    again = await submit(client, town.referrer, body, key="idem-key-0001")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert await _case_count(app, town.referrer.id) == 1


async def test_same_key_other_body_is_422_and_creates_nothing(client, app, town):
    await submit(client, town.referrer, referral_body(), key="idem-key-0002")
    other = await submit(client, town.referrer, referral_body(given="Tjetër"), key="idem-key-0002")
    assert other.status_code == 422
    assert await _case_count(app, town.referrer.id) == 1


async def test_keys_are_per_user(client, app, town):
    body = referral_body()
    mine = await submit(client, town.referrer, body, key="idem-key-0003")
    theirs = await submit(client, town.other_referrer, body, key="idem-key-0003")
    assert mine.json()["id"] != theirs.json()["id"]


async def test_ten_parallel_duplicates_create_exactly_one_case(client, app, town):
    body = referral_body()
    responses = await asyncio.gather(
        *[submit(client, town.referrer, body, key="idem-parallel-01") for _ in range(10)]
    )
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json()["id"] for r in responses}) == 1
    assert await _case_count(app, town.referrer.id) == 1


async def test_missing_or_malformed_key_is_400(client, town):
    no_key = await client.post(
        "/api/v1/referrals", json=referral_body(), headers=town.referrer.headers
    )
    assert no_key.status_code == 400
    bad = await submit(client, town.referrer, key="short")
    assert bad.status_code == 400


# --- re-referrals ---------------------------------------------------------------------------


async def test_spelling_variants_are_flagged_as_a_possible_rereferral(client, town):
    born = date(2008, 11, 2)
    first = await new_case(
        client, town.referrer, referral_body(given="Drinë", family="Provëllari", born=born)
    )
    variant = await new_case(
        client,
        town.other_referrer,
        referral_body(given="  DRINE ", family="provellari  ", born=born),
    )
    stranger = await new_case(
        client,
        town.referrer,
        referral_body(given="Drinë", family="Provëllari", born=date(2008, 11, 3)),
    )
    seen = (await client.get(f"/api/v1/cases/{variant}", headers=town.coordinator.headers)).json()
    assert [h["case_id"] for h in seen["possible_rereferrals"]] == [first]
    other = (await client.get(f"/api/v1/cases/{stranger}", headers=town.coordinator.headers)).json()
    assert other["possible_rereferrals"] == []


async def test_a_rereferral_counts_as_the_same_person_in_the_statistics(client, app, town):
    born = date(2007, 2, 9)
    first = await new_case(
        client, town.referrer, referral_body(given="Arbër", family="Numëruesi", born=born)
    )
    again = await new_case(
        client, town.other_referrer, referral_body(given="ARBER", family="numeruesi", born=born)
    )
    someone_else = await new_case(
        client,
        town.referrer,
        referral_body(given="Arbër", family="Numëruesi", born=date(2007, 2, 10)),
    )
    async with app.state.sessionmaker() as session:
        ids = [uuid.UUID(c) for c in (first, again, someone_else)]
        rows = await session.exec(
            select(CaseFile.id, CaseFile.stat_person).where(CaseFile.id.in_(ids))
        )
        person = dict(rows.all())
    assert person[ids[0]] == person[ids[1]]
    assert person[ids[2]] not in (person[ids[0]], None)


async def test_an_intake_stores_the_case_whole(client, app, town):
    """The case is written by a plain INSERT (ADR 0017): every column is what the model
    would have written, and the identity is sealed to this case's row."""
    case_id = await new_case(client, town.referrer, referral_body(given="Plotë", family="Rreshti"))
    async with app.state.sessionmaker() as session:
        case = await session.get(CaseFile, uuid.UUID(case_id))
    assert (case.state, case.version, case.municipality_id) == (
        "submitted",
        1,
        town.municipality_id,
    )
    assert (case.referrer_user_id, case.referrer_organisation_id) == (
        town.referrer.id,
        town.referrer.account.organisation_id,
    )
    assert case.created_at == case.updated_at == case.submitted_at is not None
    assert case.stat_person is not None
    assert case.blind_index
    later_stages = ("screening", "assessment", "panel", "consent_pending", "support")
    assert all(getattr(case, f"{stage}_at") is None for stage in later_stages)
    assert (case.closure_outcome, case.legal_hold_at, case.purged_at) == (None, None, None)
    ring = app.state.case_keys.ring
    assert open_field(ring, case, "given_name") == "Plotë"
    assert "Plotë" not in case.given_name_enc


async def test_a_transition_row_says_who_moved_the_case_and_seals_the_reason(client, app, town):
    case_id = await new_case(client, town.referrer)
    reason = "Synthetic reason: the screening can start today."
    moved = await move(client, town.coordinator, case_id, "screening", reason=reason)
    assert moved.status_code == 200, moved.text
    async with app.state.sessionmaker() as session:
        found = select(CaseTransition).where(CaseTransition.case_id == uuid.UUID(case_id))
        [row] = (await session.exec(found)).all()
    assert (row.from_state, row.to_state) == ("submitted", "screening")
    assert (row.actor_user_id, row.actor_role, row.immediate_risk) == (
        town.coordinator.id,
        "coordinator",
        False,
    )
    assert row.occurred_at is not None
    assert reason not in row.reason_enc
    assert open_field(app.state.case_keys.ring, row, "reason") == reason


async def test_a_plain_insert_refuses_a_missing_or_unknown_column():
    with pytest.raises(ValueError, match="occurred_at"):
        await insert_row(None, CaseTransition, id=uuid.uuid4(), case_id=uuid.uuid4())
    with pytest.raises(ValueError, match="given_name"):
        await insert_case(None, id=uuid.uuid4(), given_name="Sintetik")


async def test_rereferral_hints_stay_inside_the_coordinators_municipality(client, world, town):
    elsewhere = await make_town(client, world)
    body = referral_body(given="Vesë", family="Shembullore", born=date(2001, 1, 1))
    await new_case(client, elsewhere.referrer, body)
    here = await new_case(client, town.referrer, body)
    seen = (await client.get(f"/api/v1/cases/{here}", headers=town.coordinator.headers)).json()
    assert seen["possible_rereferrals"] == []


# --- concurrent writers ---------------------------------------------------------------------


async def test_two_concurrent_writers_exactly_one_wins(client, app, town):
    case_id = await new_case(client, town.referrer)
    tag = await etag(client, town.coordinator, case_id)

    async def advance():
        return await client.post(
            f"/api/v1/cases/{case_id}/transitions",
            json={"to": "screening"},
            headers={**town.coordinator.headers, "If-Match": tag},
        )

    results = await asyncio.gather(*[advance() for _ in range(2)])
    assert sorted(r.status_code for r in results) == [200, 412]
    async with app.state.sessionmaker() as s:
        moves = (
            await s.exec(select(CaseTransition).where(CaseTransition.case_id == uuid.UUID(case_id)))
        ).all()
    assert [(m.from_state, m.to_state) for m in moves] == [("submitted", "screening")]


async def test_concurrent_notes_are_all_kept(client, town):
    case_id = await new_case(client, town.referrer)
    bodies = [f"Observation {i}" for i in range(8)]
    results = await asyncio.gather(
        *[
            client.post(
                f"/api/v1/cases/{case_id}/notes",
                headers=town.coordinator.headers,
                json={"section": "general", "body": b},
            )
            for b in bodies
        ]
    )
    assert [r.status_code for r in results] == [201] * 8
    notes = await client.get(f"/api/v1/cases/{case_id}/notes", headers=town.coordinator.headers)
    assert sorted(n["body"] for n in notes.json()) == sorted(bodies)


# --- what a dump shows ----------------------------------------------------------------------

SECRET_GIVEN = "Zanafillë"
SECRET_FAMILY = "Sintetikaj"
SECRET_BORN = date(2007, 2, 19)
SECRET_TEXT = "Unmistakable synthetic narrative about a weekend camp"


async def _dump(test_db) -> str:
    url = make_url(test_db.url)
    if not test_db.is_postgres:
        # Read in another process: closing a descriptor of a live SQLite file in this
        # process would drop SQLite's POSIX locks, and it would then delete its WAL.
        files = [str(p) for p in (Path(url.database), Path(f"{url.database}-wal")) if p.exists()]
        result = await asyncio.to_thread(
            subprocess.run, ["cat", *files], capture_output=True, timeout=60, check=True
        )
        return result.stdout.decode("utf-8", errors="replace")
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "pg_dump is needed for the PostgreSQL dump test"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            pg_dump,
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "--data-only",
            url.database,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


async def test_a_raw_dump_shows_no_name_birth_date_or_text(client, test_db, town):
    body = referral_body(
        given=SECRET_GIVEN, family=SECRET_FAMILY, born=SECRET_BORN, description=SECRET_TEXT
    )
    case_id = await new_case(client, town.referrer, body)
    await client.post(
        f"/api/v1/cases/{case_id}/information",
        headers=town.referrer.headers,
        json={"body": f"{SECRET_TEXT} (follow-up)"},
    )
    seen = (await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)).json()
    assert seen["subject"]["given_name"] == SECRET_GIVEN  # it is stored, and readable by role
    dump = await _dump(test_db)
    assert case_id.replace("-", "") in dump.replace("-", "")  # the dump does hold the case
    for secret in (
        SECRET_GIVEN,
        SECRET_FAMILY,
        SECRET_BORN.isoformat(),
        SECRET_TEXT,
        "Rruga e Provës",
        "Kujdestari",
    ):
        assert secret not in dump, secret
