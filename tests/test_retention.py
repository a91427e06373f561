"""Retention, legal hold, erasure and subject-access export."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import func, update
from sqlmodel import select

from referral.audit import chain
from referral.models import (
    AuditEvent,
    AuthSession,
    CaseFile,
    IdempotencyRecord,
    RefreshToken,
    StatsCell,
)
from referral.models.base import utcnow
from tests.case_world import (
    etag,
    force_state,
    make_town,
    new_case,
    referral_body,
    screen_and_assess,
    submit,
)
from tests.conftest import World, login
from tests.helpers import cli_env, run_cli, scratch_app


@pytest.fixture
async def isolated(settings, tmp_path):
    """An app on a database of its own, so 'exactly these cases' means exactly."""
    async with scratch_app(settings, tmp_path, "retention") as (app, client, own, database):
        town = await make_town(client, World(app))
        yield app, client, town, database, own


async def _closed(app, client, town, name: str, days_ago: int, assessed: bool) -> str:
    case_id = await new_case(client, town.referrer, referral_body(given=name))
    await client.post(
        f"/api/v1/cases/{case_id}/notes",
        headers=town.coordinator.headers,
        json={"section": "general", "body": f"Note about {name}"},
    )
    await force_state(app, case_id, "assessment" if assessed else "screening")
    closed = utcnow() - timedelta(days=days_ago)
    values = {
        "state": "closed",
        "closure_outcome": "no_further_action",
        "closed_at": closed,
        "submitted_at": closed - timedelta(days=30),
    }
    if not assessed:
        values["assessment_at"] = None
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(update(CaseFile).where(CaseFile.id == uuid.UUID(case_id)).values(**values))
    return case_id


async def _name(client, town, case_id) -> str | None:
    body = (await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)).json()
    return body["subject"]["given_name"]


async def _snapshot(app) -> list[tuple]:
    from referral.stats.snapshot import build_snapshot

    async with app.state.sessionmaker() as s, s.begin():
        snapshot = await build_snapshot(s, app.state.reporting_policy, date.today(), None)
    async with app.state.sessionmaker() as s:
        cells = (
            await s.exec(
                select(StatsCell).where(StatsCell.snapshot_id == snapshot.id).order_by(StatsCell.id)
            )
        ).all()
    return [(c.measure, c.table_key, c.period, c.area, tuple(c.categories), c.value) for c in cells]


def _cli(settings, *args) -> subprocess.CompletedProcess:
    return run_cli(cli_env(settings, settings.database_url), *args)


async def test_retention_removes_exactly_what_the_policy_says(isolated):
    app, client, town, _, settings = isolated
    due_short = await _closed(app, client, town, "Skadueshme", 400, assessed=False)  # > 365
    kept_short = await _closed(app, client, town, "Ruajtur", 100, assessed=False)
    kept_long = await _closed(app, client, town, "Vlerësuar", 400, assessed=True)  # < 2190
    due_long = await _closed(app, client, town, "Vjetër", 2200, assessed=True)  # > 2190
    held = await _closed(app, client, town, "Mbajtur", 400, assessed=False)
    hold = await client.put(
        f"/api/v1/cases/{held}/legal-hold",
        json={"reason": "Court order 17/2026 (synthetic)"},
        headers={
            **town.coordinator.headers,
            "If-Match": await etag(client, town.coordinator, held),
        },
    )
    assert hold.status_code == 200, hold.text
    open_case = await new_case(client, town.referrer, referral_body(given="Hapur"))
    before = await _snapshot(app)

    dry = await asyncio.to_thread(_cli, settings, "retention", "run")
    assert dry.returncode == 0, dry.stderr
    assert {due_short, due_long} == {
        line.split()[3] for line in dry.stdout.splitlines() if line.startswith("would purge")
    }
    assert await _name(client, town, due_short) == "Skadueshme"  # a dry run changes nothing

    applied = await asyncio.to_thread(_cli, settings, "retention", "run", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "2 case(s) purged" in applied.stdout
    assert "purging" in applied.stderr  # the progress bar
    for case_id in (due_short, due_long):
        seen = (
            await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
        ).json()
        assert seen["subject"]["given_name"] is None
        assert seen["subject"]["date_of_birth"] is None
        assert seen["description"] is None
        assert seen["purged_at"] is not None
        assert [n["body"] for n in seen["sections"]["general"]["notes"]] == [""]
        assert seen["state"] == "closed"  # the skeleton stays
    for case_id, name in (
        (kept_short, "Ruajtur"),
        (kept_long, "Vlerësuar"),
        (held, "Mbajtur"),
        (open_case, "Hapur"),
    ):
        assert await _name(client, town, case_id) == name
    assert await _snapshot(app) == before  # statistics do not move
    async with app.state.sessionmaker() as s:
        purges = (
            await s.exec(select(AuditEvent).where(AuditEvent.action == "retention.purge"))
        ).all()
    assert sorted(e.resource_ids[0] for e in purges) == sorted([due_short, due_long])
    again = await asyncio.to_thread(_cli, settings, "retention", "run", "--apply")
    assert "0 case(s) purged" in again.stdout


async def test_retention_deletes_expired_sessions_and_old_replay_records(isolated):
    app, client, town, _, settings = isolated
    leaving = town.other_referrer
    second = await login(client, leaving.account)  # a second session, with a refresh token
    fresh_key, old_key = uuid.uuid4().hex, uuid.uuid4().hex
    fresh_body, old_body = referral_body(), referral_body()
    fresh = await submit(client, town.referrer, fresh_body, key=fresh_key)
    old = await submit(client, town.referrer, old_body, key=old_key)
    assert fresh.status_code == old.status_code == 201
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(AuthSession)
            .where(AuthSession.user_id == leaving.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await s.exec(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == old_key)
            .values(created_at=utcnow() - timedelta(hours=settings.idempotency_replay_hours + 1))
        )

    async def remaining() -> tuple[int, int, int]:
        async with app.state.sessionmaker() as s:
            counts = [
                (await s.exec(select(func.count()).select_from(model))).one()
                for model in (AuthSession, RefreshToken, IdempotencyRecord)
            ]
        return counts[0], counts[1], counts[2]

    before = await remaining()
    dry = await asyncio.to_thread(_cli, settings, "retention", "run")
    assert dry.returncode == 0, dry.stderr
    assert "2 expired session(s) and 1 idempotency record(s) past their replay window due" in (
        dry.stdout
    )
    assert await remaining() == before  # a dry run changes nothing
    later = (date.today() + timedelta(days=400)).isoformat()
    pretended = await asyncio.to_thread(_cli, settings, "retention", "run", "--as-of", later)
    assert "2 expired session(s) and 1 idempotency record(s)" in pretended.stdout  # not more

    applied = await asyncio.to_thread(_cli, settings, "retention", "run", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "2 expired session(s) and 1 idempotency record(s) past their replay window deleted" in (
        applied.stdout
    )
    sessions, refresh_tokens, replay_records = await remaining()
    assert (sessions, replay_records) == (before[0] - 2, before[2] - 1)
    assert refresh_tokens < before[1]  # the expired sessions' refresh tokens went with them
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert refreshed.status_code == 401
    assert (await client.get("/api/v1/cases", headers=town.referrer.headers)).status_code == 200
    # inside the window the key still replays; past it, the same key is a new submission
    again_fresh = await submit(client, town.referrer, fresh_body, key=fresh_key)
    assert again_fresh.json()["id"] == fresh.json()["id"]
    again_old = await submit(client, town.referrer, old_body, key=old_key)
    assert again_old.status_code == 201
    assert again_old.json()["id"] != old.json()["id"]

    async with app.state.sessionmaker() as s:
        sweeps = (
            await s.exec(select(AuditEvent).where(AuditEvent.action == "retention.sweep"))
        ).all()
    async with app.state.sessionmaker() as s:
        assert (await chain.verify(s, app.state.audit_keys)).ok
    assert sorted(e.resource_type for e in sweeps) == ["auth_session", "idempotency_record"]
    assert all(e.purpose == "retention" and e.outcome == "allowed" for e in sweeps)
    quiet = await asyncio.to_thread(_cli, settings, "retention", "run", "--apply")
    assert "0 expired session(s) and 0 idempotency record(s)" in quiet.stdout


async def test_legal_hold_blocks_erasure_until_lifted(isolated):
    app, client, town, _, _ = isolated
    case_id = await _closed(app, client, town, "Ruajtshme", 10, assessed=True)
    url = f"/api/v1/cases/{case_id}"
    headers = town.coordinator.headers
    missing = await client.put(
        f"{url}/legal-hold", json={"reason": "Pending litigation"}, headers=headers
    )
    assert missing.status_code == 428
    await client.put(
        f"{url}/legal-hold",
        json={"reason": "Pending litigation"},
        headers={**headers, "If-Match": await etag(client, town.coordinator, case_id)},
    )
    refused = await client.post(
        f"{url}/erase",
        json={"reason": "Subject's request (art. 17)"},
        headers={**headers, "If-Match": await etag(client, town.coordinator, case_id)},
    )
    assert refused.status_code == 409
    assert await _name(client, town, case_id) == "Ruajtshme"
    lifted = await client.post(
        f"{url}/legal-hold/release",
        json={"reason": "Case settled"},
        headers={**headers, "If-Match": await etag(client, town.coordinator, case_id)},
    )
    assert lifted.status_code == 200
    erased = await client.post(
        f"{url}/erase",
        json={"reason": "Subject's request (art. 17)"},
        headers={**headers, "If-Match": await etag(client, town.coordinator, case_id)},
    )
    assert erased.status_code == 200, erased.text
    assert await _name(client, town, case_id) is None
    twice = await client.post(
        f"{url}/erase",
        json={"reason": "Subject's request (art. 17)"},
        headers={**headers, "If-Match": await etag(client, town.coordinator, case_id)},
    )
    assert twice.status_code == 409
    async with app.state.sessionmaker() as s:
        actions = (
            await s.exec(
                select(AuditEvent.action).where(AuditEvent.actor_user_id == town.coordinator.id)
            )
        ).all()
    assert {"case.legal_hold", "case.legal_hold_release", "case.erase"} <= set(actions)


async def test_an_open_case_is_not_erased(isolated):
    _, client, town, _, _ = isolated
    case_id = await new_case(client, town.referrer)
    response = await client.post(
        f"/api/v1/cases/{case_id}/erase",
        json={"reason": "Subject's request (art. 17)"},
        headers={
            **town.coordinator.headers,
            "If-Match": await etag(client, town.coordinator, case_id),
        },
    )
    assert response.status_code == 409


async def test_export_holds_everything_about_the_subject_and_nobody_else(isolated):
    app, client, town, _, _ = isolated
    mine = await new_case(
        client,
        town.referrer,
        referral_body(
            given="Eksportueshme", family="Subjekti", description="Her own synthetic story"
        ),
    )
    other = await new_case(
        client,
        town.referrer,
        referral_body(
            given="Tjetërkush", family="Personi", description="Someone else's synthetic story"
        ),
    )
    for case_id, text in ((mine, "Meeting with her mentor"), (other, "Unrelated meeting")):
        await client.post(
            f"/api/v1/cases/{case_id}/notes",
            headers=town.coordinator.headers,
            json={"section": "general", "body": text},
        )
    await screen_and_assess(
        client,
        app,
        town.coordinator,
        mine,
        "Screened for export test",
        {
            "factors": [{"dimension": "intent", "factor": "x_y", "score": 2}],
            "summary": "Assessment for export",
        },
    )
    meeting = (
        await client.post(
            "/api/v1/panel-meetings",
            headers=town.coordinator.headers,
            json={"meeting_date": date.today().isoformat(), "attendance": ["education"]},
        )
    ).json()
    await client.post(
        f"/api/v1/panel-meetings/{meeting['id']}/decisions",
        headers=town.coordinator.headers,
        json={"case_id": mine, "decision": "adopt", "rationale": "Decision rationale for export"},
    )
    await force_state(app, mine, "consent_pending")
    await client.post(
        f"/api/v1/cases/{mine}/consents",
        headers=town.coordinator.headers,
        json={
            "given_by": "guardian",
            "guardian_name": "Kujdestarja Eksport",
            "scope": ["mentoring"],
            "given_on": date.today().isoformat(),
        },
    )
    await client.put(
        f"/api/v1/cases/{mine}/plan",
        json={"goals": "Plan goals for export"},
        headers={
            **town.coordinator.headers,
            "If-Match": await etag(client, town.coordinator, mine),
        },
    )
    await client.post(
        f"/api/v1/cases/{mine}/interventions",
        headers=town.coordinator.headers,
        json={"type": "mentoring", "agency": "civil_society"},
    )
    await force_state(app, mine, "support")
    await client.post(
        f"/api/v1/cases/{mine}/reviews",
        headers=town.coordinator.headers,
        json={"due_on": date.today().isoformat()},
    )
    exported = await client.get(f"/api/v1/cases/{mine}/export", headers=town.coordinator.headers)
    assert exported.status_code == 200, exported.text
    text = json.dumps(exported.json())
    body = exported.json()["case"]
    assert len(body["panel_decisions"]) == 1
    assert len(body["consents"]) == 1
    assert len(body["interventions"]) == 1
    assert [r["kind"] for r in body["reviews"]] == ["plan"]
    for expected in (
        "Decision rationale for export",
        "Kujdestarja Eksport",
        "Plan goals for export",
    ):
        assert expected in text, expected
    for expected in (
        "Eksportueshme",
        "Subjekti",
        "Her own synthetic story",
        "Meeting with her mentor",
        "Screened for export test",
        "Assessment for export",
        "case.read",
        "access_log",
    ):
        assert expected in text, expected
    for absent in (
        "Tjetërkush",
        "Someone else",
        "Unrelated meeting",
        str(town.referrer.id),
        town.referrer.account.username,
        str(town.coordinator.id),
    ):
        assert absent not in text, absent
    for who in (town.referrer, town.panel[next(iter(town.panel))], town.analyst):
        denied = await client.get(f"/api/v1/cases/{mine}/export", headers=who.headers)
        assert denied.status_code == 403
