"""Case list filters and paging, sections, consent withdrawal, and the audit of case reads."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from referral.models import AuditEvent, CaseReview
from referral.models.enums import Agency
from tests.case_world import etag, force_state, make_town, move, new_case, referral_body


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


async def _ids(client, actor, **params) -> list[str]:
    response = await client.get(
        "/api/v1/cases", params={"limit": 100, **params}, headers=actor.headers
    )
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_list_filters_by_state_urgency_and_municipality(client, app, world, town):
    routine = await new_case(client, town.referrer, referral_body(urgency="routine"))
    immediate = await new_case(client, town.referrer, referral_body(urgency="immediate"))
    await force_state(app, immediate, "screening")
    coordinator = town.coordinator
    assert set(await _ids(client, coordinator)) == {routine, immediate}
    assert await _ids(client, coordinator, state="screening") == [immediate]
    assert set(await _ids(client, coordinator, state=["screening", "submitted"])) == {
        routine,
        immediate,
    }
    assert await _ids(client, coordinator, urgency="routine") == [routine]
    other = await make_town(client, world)
    assert await _ids(client, coordinator, municipality_id=str(other.municipality_id)) == []
    bad = await client.get(
        "/api/v1/cases", params={"urgency": "whenever"}, headers=coordinator.headers
    )
    assert bad.status_code == 422


async def test_overdue_filter_and_worklist(client, app, town):
    on_time = await new_case(client, town.referrer)
    late = await new_case(client, town.referrer)
    for case_id in (on_time, late):
        await force_state(app, case_id, "support")
    url = f"/api/v1/cases/{late}/reviews"
    review = await client.post(
        url, headers=town.coordinator.headers, json={"due_on": date.today().isoformat()}
    )
    assert review.status_code == 201
    await client.post(
        f"/api/v1/cases/{on_time}/reviews",
        headers=town.coordinator.headers,
        json={"due_on": (date.today() + timedelta(days=30)).isoformat()},
    )
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(CaseReview)
            .where(CaseReview.id == uuid.UUID(review.json()["id"]))
            .values(due_on=date.today() - timedelta(days=3))
        )
    assert await _ids(client, town.coordinator, overdue_reviews=True) == [late]
    items = (await client.get("/api/v1/worklist", headers=town.coordinator.headers)).json()
    assert [(i["case_id"], i["overdue"]) for i in items] == [(late, True)]
    wider = (
        await client.get("/api/v1/worklist", params={"days": 60}, headers=town.coordinator.headers)
    ).json()
    assert [(i["case_id"], i["overdue"]) for i in wider] == [(late, True), (on_time, False)]


async def test_keyset_paging_visits_every_case_once(client, town):
    made = {await new_case(client, town.referrer) for _ in range(5)}
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get("/api/v1/cases", params=params, headers=town.coordinator.headers)
        ).json()
        assert len(page["items"]) <= 2
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made)
    too_many = await client.get(
        "/api/v1/cases", params={"limit": 101}, headers=town.coordinator.headers
    )
    assert too_many.status_code == 422


async def test_sections_are_read_and_written_by_agency(client, app, town):
    case_id = await new_case(client, town.referrer)
    await force_state(app, case_id, "panel")
    url = f"/api/v1/cases/{case_id}/notes"
    health, teacher, police = (
        town.panel[a] for a in (Agency.health, Agency.education, Agency.police)
    )
    assert (
        await client.post(
            url, headers=health.headers, json={"section": "health", "body": "Clinical context."}
        )
    ).status_code == 201
    assert (
        await client.post(
            url, headers=teacher.headers, json={"section": "police", "body": "Not mine to write."}
        )
    ).status_code == 403
    assert (
        await client.post(
            url, headers=police.headers, json={"section": "police", "body": "Known to us."}
        )
    ).status_code == 201
    sections = lambda actor: client.get(url, headers=actor.headers)  # noqa: E731
    assert {n["section"] for n in (await sections(teacher)).json()} == set()
    assert {n["section"] for n in (await sections(health)).json()} == {"health"}
    assert {n["section"] for n in (await sections(police)).json()} == {"police"}
    assert {n["section"] for n in (await sections(town.coordinator)).json()} == {"health", "police"}


async def test_consent_withdrawal_blocks_support(client, app, town):
    case_id = await new_case(client, town.referrer, referral_body(born=date(1990, 1, 1)))
    await force_state(app, case_id, "consent_pending")
    url = f"/api/v1/cases/{case_id}"
    consent = await client.post(
        f"{url}/consents",
        headers=town.coordinator.headers,
        json={"given_by": "subject", "scope": ["mentoring"], "given_on": date.today().isoformat()},
    )
    assert consent.status_code == 201, consent.text
    await client.put(
        f"{url}/plan",
        json={"goals": "Mentoring."},
        headers={
            **town.coordinator.headers,
            "If-Match": await etag(client, town.coordinator, case_id),
        },
    )
    await client.post(
        f"{url}/interventions",
        headers=town.coordinator.headers,
        json={"type": "mentoring", "agency": "civil_society"},
    )
    withdrawal = f"{url}/consents/{consent.json()['id']}/withdrawal"
    missing = await client.post(
        withdrawal,
        json={"withdrawn_on": date.today().isoformat()},
        headers=town.coordinator.headers,
    )
    assert missing.status_code == 428
    withdrawn = await client.post(
        withdrawal,
        json={"withdrawn_on": date.today().isoformat()},
        headers={**town.coordinator.headers, "If-Match": '"1"'},
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["withdrawn_on"] == date.today().isoformat()
    blocked = await move(client, town.coordinator, case_id, "support")
    assert blocked.status_code == 409
    assert blocked.json()["unmet"] == ["consent_valid"]


async def test_case_reads_and_lists_are_audited_without_personal_data(client, app, town):
    body = referral_body(
        given="Auditueshme", family="Provëza", description="Synthetic audit narrative XYZ"
    )
    case_id = await new_case(client, town.referrer, body)
    await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
    await client.get("/api/v1/cases", headers=town.coordinator.headers)
    async with app.state.sessionmaker() as s:
        events = (
            await s.exec(
                select(AuditEvent)
                .where(AuditEvent.actor_user_id.in_([town.coordinator.id, town.referrer.id]))
                .order_by(AuditEvent.seq)
            )
        ).all()
    actions = [(e.action, e.actor_role) for e in events if e.action.startswith("case.")]
    assert actions == [
        ("case.create", "referrer"),
        ("case.read", "coordinator"),
        ("case.list", "coordinator"),
    ]
    read = next(e for e in events if e.action == "case.read")
    assert read.resource_ids == [case_id]
    assert "subject" in read.fields
    listed = next(e for e in events if e.action == "case.list")
    assert case_id in listed.resource_ids
    stored = json.dumps([e.model_dump(mode="json") for e in events])
    for secret in ("Auditueshme", "Provëza", "Synthetic audit narrative"):
        assert secret not in stored
