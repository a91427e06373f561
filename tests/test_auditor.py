"""The auditor's view: search, break-glass queue; break-glass itself. Walks of the trail:
test_audit_verifications.py."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from referral.models import AuditEvent, BreakGlassGrant
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from tests.case_world import force_state, make_town, new_case, referral_body
from tests.routes import api_routes, concrete_path

REASON = "Neighbouring municipality reports the same young person at risk today."


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


@pytest.fixture
async def auditor(signed_in):
    return (await signed_in(Role.auditor))[1]


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.auditor])
async def test_only_the_auditor_reaches_the_audit_api(client, app, signed_in, role):
    _, headers = await signed_in(role)
    routes = [i for i in api_routes(app) if i.path.startswith("/api/v1/audit")]
    assert len(routes) == 6
    for info in routes:
        response = await client.request(
            info.method, concrete_path(info), headers=headers, json={"verdict": "justified"}
        )
        assert response.status_code == 403, f"{role} {info.method} {info.path}"


async def test_auditor_sees_no_case_content(client, app, auditor, town):
    case_id = await new_case(client, town.referrer)
    checked = 0
    for info in api_routes(app):
        if not info.path.startswith(
            ("/api/v1/cases", "/api/v1/panel-meetings", "/api/v1/worklist")
        ):
            continue
        path = concrete_path(info)
        if "{case_id}" in info.path:
            path = info.path.replace("{case_id}", case_id)
            path = concrete_path(type(info)(info.method, path, info.route))
        response = await client.request(info.method, path, headers=auditor, json={})
        assert response.status_code == 403, info.path
        checked += 1
    assert checked >= 20


async def _search(client, auditor, **params) -> list[dict]:
    response = await client.get(
        "/api/v1/audit/events", params={"limit": 100, **params}, headers=auditor
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_search_by_actor_case_action_outcome_and_time(client, auditor, town):
    start = utcnow()
    case_id = await new_case(client, town.referrer)
    await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
    await client.get("/api/v1/cases", headers=town.coordinator.headers)
    await client.get(f"/api/v1/cases/{case_id}", headers=town.analyst.headers)  # denied
    by_case = await _search(client, auditor, case_id=case_id)
    assert [(e["action"], e["outcome"]) for e in by_case] == [
        ("case.create", "allowed"),
        ("case.read", "allowed"),
        ("case.list", "allowed"),
        ("case.read", "denied"),
    ]
    by_actor = await _search(
        client, auditor, actor_user_id=str(town.coordinator.id), since=start.isoformat()
    )
    assert {e["action"] for e in by_actor} == {"case.read", "case.list"}
    denied = await _search(client, auditor, actor_user_id=str(town.analyst.id), outcome="denied")
    assert [(e["status_code"], e["resource_ids"]) for e in denied] == [(403, [case_id])]
    reads = await _search(
        client, auditor, action="case.read", outcome="allowed", since=start.isoformat()
    )
    assert {e["actor_user_id"] for e in reads} == {str(town.coordinator.id)}
    assert (
        await _search(
            client,
            auditor,
            action="case.read",
            until=(start - timedelta(days=1)).isoformat(),
            since=(start - timedelta(days=2)).isoformat(),
        )
        == []
    )


async def test_search_pages_by_sequence(client, auditor, town):
    for _ in range(3):
        await client.get("/api/v1/cases", headers=town.coordinator.headers)
    seen, after = [], None
    while True:
        params = {
            "actor_user_id": str(town.coordinator.id),
            "limit": 2,
            **({"after": after} if after is not None else {}),
        }
        page = (await client.get("/api/v1/audit/events", params=params, headers=auditor)).json()
        seen += [e["seq"] for e in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) >= 3
    assert seen == sorted(set(seen))


async def test_full_lifecycle_trail_shows_who_read_the_case_and_no_personal_data(
    client, app, auditor, town
):
    body = referral_body(
        given="Gjurmë", family="Testueshme", description="Synthetic trail narrative QRS"
    )
    case_id = await new_case(client, town.referrer, body)
    readers = {
        town.referrer.id: town.referrer,
        town.coordinator.id: town.coordinator,
        town.panel[Agency.police].id: town.panel[Agency.police],
    }
    await force_state(app, case_id, "screening")
    for actor in readers.values():
        assert (
            await client.get(f"/api/v1/cases/{case_id}", headers=actor.headers)
        ).status_code == 200
    await client.get(f"/api/v1/cases/{case_id}", headers=town.panel[Agency.health].headers)
    trail = await _search(client, auditor, case_id=case_id)
    read_by = {
        e["actor_user_id"]
        for e in trail
        if e["action"] == "case.read" and e["outcome"] == "allowed"
    }
    assert read_by == {str(i) for i in readers}
    refused = [e for e in trail if e["outcome"] == "denied"]
    assert [e["actor_user_id"] for e in refused] == [str(town.panel[Agency.health].id)]
    async with app.state.sessionmaker() as s:
        everything = json.dumps(
            [e.model_dump(mode="json") for e in (await s.exec(select(AuditEvent))).all()]
        )
    for secret in ("Gjurmë", "Testueshme", "Synthetic trail narrative", "2010-05-17"):
        assert secret not in everything


# --- break-glass ----------------------------------------------------------------------------


async def _break_glass(client, actor, case_id, reason=REASON):
    return await client.post(
        f"/api/v1/cases/{case_id}/break-glass", json={"reason": reason}, headers=actor.headers
    )


async def test_break_glass_opens_a_case_for_a_while_and_queues_it(
    client, app, world, town, auditor
):
    elsewhere = await make_town(client, world)
    case_id = await new_case(client, town.referrer)
    outsider = elsewhere.coordinator
    url = f"/api/v1/cases/{case_id}"
    assert (await client.get(url, headers=outsider.headers)).status_code == 404
    short = await _break_glass(client, outsider, case_id, "too short")
    assert short.status_code == 422
    granted = await _break_glass(client, outsider, case_id)
    assert granted.status_code == 201, granted.text
    expires = granted.json()["expires_at"]
    assert (utcnow() - utcnow()).seconds + 60 >= 59  # policy: 60 minutes
    seen = await client.get(url, headers=outsider.headers)
    assert seen.status_code == 200
    # the trail marks reads made through break-glass
    events = await _search(client, auditor, actor_user_id=str(outsider.id), case_id=case_id)
    assert [(e["action"], e["outcome"], e["purpose"]) for e in events] == [
        ("case.read", "denied", "not-found"),
        ("case.break_glass", "allowed", "break_glass"),
        ("case.read", "allowed", "break_glass"),
    ]
    # it is not a way to list or to write
    listed = await client.get("/api/v1/cases", headers=outsider.headers)
    assert case_id not in {i["id"] for i in listed.json()["items"]}
    write = await client.post(
        f"{url}/notes",
        headers=outsider.headers,
        json={"section": "general", "body": "Should not be possible."},
    )
    assert write.status_code == 404
    # queued for the auditor, with the reason
    queue = (await client.get("/api/v1/audit/break-glass", headers=auditor)).json()
    mine = [g for g in queue if g["id"] == granted.json()["grant_id"]]
    assert len(mine) == 1
    assert mine[0]["reason"] == REASON
    assert mine[0]["expires_at"] == expires
    review_url = f"/api/v1/audit/break-glass/{mine[0]['id']}/review"
    reviewed = await client.post(
        review_url, headers=auditor, json={"verdict": "justified", "note": "Urgent, proportionate."}
    )
    assert reviewed.status_code == 200
    assert reviewed.json()["verdict"] == "justified"
    again = await client.post(review_url, headers=auditor, json={"verdict": "unjustified"})
    assert again.status_code == 409
    pending = (await client.get("/api/v1/audit/break-glass", headers=auditor)).json()
    assert mine[0]["id"] not in {g["id"] for g in pending}
    # after expiry the case is 404 again
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(BreakGlassGrant)
            .where(BreakGlassGrant.id == uuid.UUID(granted.json()["grant_id"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await client.get(url, headers=outsider.headers)).status_code == 404


async def test_panel_member_may_break_glass_before_the_panel(client, app, town):
    case_id = await new_case(client, town.referrer)
    teacher = town.panel[Agency.education]
    assert (
        await client.get(f"/api/v1/cases/{case_id}", headers=teacher.headers)
    ).status_code == 404
    assert (await _break_glass(client, teacher, case_id)).status_code == 201
    seen = await client.get(f"/api/v1/cases/{case_id}", headers=teacher.headers)
    assert seen.status_code == 200
    assert "police" not in seen.json()["sections"]  # still only their agency's sections


async def test_break_glass_is_refused_where_it_is_not_needed_or_not_allowed(client, town):
    case_id = await new_case(client, town.referrer)
    assert (await _break_glass(client, town.coordinator, case_id)).status_code == 409
    for actor in (town.other_referrer, town.analyst):
        assert (await _break_glass(client, actor, case_id)).status_code == 403
    assert (await _break_glass(client, town.coordinator, str(uuid.uuid4()))).status_code == 404
