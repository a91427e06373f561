"""A case's detail view is written by orjson from values our code and the database typed
(views.detail_view): it must be, byte for byte, the JSON of the model the route declares,
as pydantic writes it. Checked here on a case that holds every kind of record (notes in
several sections, assessments, screening, a panel decision with dissent, consent, plan,
intervention, reviews and post-exit reviews, a possible re-referral) and text of every
script, as a coordinator and as panel members of several agencies see it, as it is read
(on PostgreSQL, the lean read) and as a transition answers it. The subject-access export,
built from the same view, reads back the same values."""

from __future__ import annotations

from datetime import date

import pytest

from referral.cases.schemas import CoordinatorCaseView, PanelCaseView
from referral.models.enums import Agency
from tests.case_world import etag, force_state, make_town, move, new_case, referral_body

HOSTILE = 'Zoë "Ünïcode" \\ </script> \u2028 名前 😀 \t\n end'


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


def _assert_declared(body: bytes, model) -> dict:
    """The body is what pydantic writes for the declared model from that very JSON."""
    assert body == model.model_validate_json(body).model_dump_json().encode()
    return model.model_validate_json(body).model_dump(mode="json")


@pytest.fixture
async def rich_case(client, app, town) -> str:
    coordinator, police = town.coordinator, town.panel[Agency.police]
    person = {"given": "Ëlira", "family": HOSTILE[:60], "born": date(2010, 5, 17)}
    earlier = await new_case(client, town.referrer, referral_body(**person))
    case_id = await new_case(client, town.referrer, referral_body(**person, description=HOSTILE))
    url = f"/api/v1/cases/{case_id}"
    headers = coordinator.headers

    async def ok(response, status=200):
        assert response.status_code == status, response.text
        return response

    await ok(await move(client, coordinator, case_id, "screening"))
    for who, section in ((police, "police"), (coordinator, "general")):
        note = {"section": section, "body": f"{section}: {HOSTILE}"}
        await ok(await client.post(f"{url}/notes", headers=who.headers, json=note), 201)
    screening = {"summary": HOSTILE, "rereferrals_reviewed": True}
    if_match = {"If-Match": await etag(client, coordinator, case_id)}
    await ok(await client.put(f"{url}/screening", json=screening, headers=headers | if_match))
    await force_state(app, case_id, "panel")
    factors = [
        {"dimension": "engagement", "factor": "online_content", "score": 2},
        {"dimension": "capability", "factor": "means", "score": 0},
    ]
    assessment = {"section": "general", "factors": factors, "summary": HOSTILE}
    await ok(await client.post(f"{url}/assessments", headers=headers, json=assessment), 201)
    meeting = await ok(
        await client.post(
            "/api/v1/panel-meetings",
            headers=headers,
            json={"meeting_date": date.today().isoformat(), "attendance": ["police", "health"]},
        ),
        201,
    )
    decision = {
        "case_id": case_id,
        "decision": "adopt",
        "rationale": HOSTILE,
        "dissenting_agencies": ["police"],
        "dissent": "Would monitor more closely.",
    }
    decisions = f"/api/v1/panel-meetings/{meeting.json()['id']}/decisions"
    await ok(await client.post(decisions, headers=headers, json=decision), 201)
    await ok(await move(client, coordinator, case_id, "consent_pending"))
    consent = {
        "given_by": "guardian",
        "guardian_name": HOSTILE[:60],
        "scope": ["mentoring", "family_support"],
        "given_on": date.today().isoformat(),
    }
    await ok(await client.post(f"{url}/consents", headers=headers, json=consent), 201)
    if_match = {"If-Match": await etag(client, coordinator, case_id)}
    await ok(await client.put(f"{url}/plan", json={"goals": HOSTILE}, headers=headers | if_match))
    intervention = {"type": "mentoring", "agency": "education", "start_date": "2026-01-05"}
    await ok(await client.post(f"{url}/interventions", headers=headers, json=intervention), 201)
    await ok(await move(client, coordinator, case_id, "support"))
    review = {"due_on": date.today().isoformat()}
    await ok(await client.post(f"{url}/reviews", headers=headers, json=review), 201)
    assert earlier != case_id
    return case_id


async def test_a_detail_view_is_the_json_of_its_declared_model(client, town, rich_case):
    url = f"/api/v1/cases/{rich_case}"
    read = await client.get(url, headers=town.coordinator.headers)
    assert read.status_code == 200, read.text
    view = _assert_declared(read.content, CoordinatorCaseView)
    # every kind of record is in it, so every part of the view was checked
    kinds = ("screening", "plan", "panel_decisions", "consents", "interventions", "reviews")
    assert all(view[kind] for kind in (*kinds, "possible_rereferrals")), view
    assert view["sections"]["police"]["notes"], view["sections"]
    assert view["sections"]["general"]["assessments"], view["sections"]
    assert view["description"] == HOSTILE
    assert view["subject"]["date_of_birth"] == "2010-05-17"
    for agency in (Agency.police, Agency.education, Agency.health):
        seen = await client.get(url, headers=town.panel[agency].headers)
        assert seen.status_code == 200, seen.text
        _assert_declared(seen.content, PanelCaseView)


async def test_a_transition_answers_with_the_json_of_its_declared_model(client, town, rich_case):
    moved = await move(
        client, town.coordinator, rich_case, "monitoring", exit_reason="risk_reduced"
    )
    assert moved.status_code == 200, moved.text
    view = _assert_declared(moved.content, CoordinatorCaseView)
    assert sorted(r["months_after_exit"] or 0 for r in view["reviews"]) == [0, 6, 12]


async def test_the_subject_access_export_holds_the_view_as_its_json_reads(client, town, rich_case):
    headers = town.coordinator.headers
    read = await client.get(f"/api/v1/cases/{rich_case}", headers=headers)
    exported = await client.get(f"/api/v1/cases/{rich_case}/export", headers=headers)
    assert exported.status_code == 200, exported.text
    case = exported.json()["case"]
    case.pop("access_log")  # the export adds who read the case, and when
    expected = read.json()
    expected.pop("possible_rereferrals")  # other people's cases are not the subject's data
    for section in expected["sections"].values():  # staff appear by agency, never by id
        for note in section["notes"]:
            note.pop("author_user_id")
    expected["screening"].pop("recorded_by")
    assert case == expected
