"""A referral's whole journey, driven by the role that does each step, over HTTP."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from referral.models.enums import Agency
from tests.case_world import etag, force_state, make_town, move, new_case, referral_body


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


async def test_full_happy_path_from_referral_to_closure(client, app, town, signed_in):
    coordinator, referrer = town.coordinator, town.referrer
    police = town.panel[Agency.police]
    teacher = town.panel[Agency.education]
    social = town.panel[Agency.social_services]

    # a teacher refers a 15-year-old
    case_id = await new_case(client, referrer)
    url = f"/api/v1/cases/{case_id}"
    seen = (await client.get(url, headers=referrer.headers)).json()
    assert seen["stage"] == "received"

    # screening, with the police deconflicting in their own section
    assert (await move(client, coordinator, case_id, "screening")).status_code == 200
    note = await client.post(
        f"{url}/notes",
        headers=police.headers,
        json={"section": "police", "body": "No conflicting operation."},
    )
    assert note.status_code == 201, note.text
    assert (await client.get(url, headers=teacher.headers)).status_code == 404  # not yet
    screened = await client.put(
        f"{url}/screening",
        json={
            "summary": "Referral is credible; proceed to assessment.",
            "rereferrals_reviewed": True,
        },
        headers={**coordinator.headers, "If-Match": await etag(client, coordinator, case_id)},
    )
    assert screened.status_code == 200, screened.text
    assert (await move(client, coordinator, case_id, "assessment")).status_code == 200

    # assessment, then the panel
    assessed = await client.post(
        f"{url}/assessments",
        headers=coordinator.headers,
        json={
            "section": "general",
            "factors": [
                {"dimension": "engagement", "factor": "online_content", "score": 2},
                {"dimension": "intent", "factor": "expressed_intent", "score": 1},
                {"dimension": "capability", "factor": "means", "score": 0},
            ],
            "summary": "Moderate engagement, low capability.",
        },
    )
    assert assessed.status_code == 201, assessed.text
    assert assessed.json()["totals"] == {"engagement": 2, "intent": 1, "capability": 0}
    assert (await move(client, coordinator, case_id, "panel")).status_code == 200
    school_view = await client.post(
        f"{url}/assessments",
        headers=teacher.headers,
        json={"factors": [{"dimension": "engagement", "factor": "peer_influence", "score": 1}]},
    )
    assert school_view.status_code == 201
    assert school_view.json()["section"] == "education"

    meeting = await client.post(
        "/api/v1/panel-meetings",
        headers=coordinator.headers,
        json={
            "meeting_date": date.today().isoformat(),
            "attendance": ["police", "education", "social_services", "health", "municipality"],
        },
    )
    assert meeting.status_code == 201, meeting.text
    decided = await client.post(
        f"/api/v1/panel-meetings/{meeting.json()['id']}/decisions",
        headers=coordinator.headers,
        json={
            "case_id": case_id,
            "decision": "adopt",
            "rationale": "Support through school and family.",
            "dissenting_agencies": ["police"],
            "dissent": "Would monitor more closely.",
        },
    )
    assert decided.status_code == 201, decided.text
    assert (await move(client, coordinator, case_id, "consent_pending")).status_code == 200

    # the subject is 15: a guardian consents; a plan with an intervention
    subject_consent = await client.post(
        f"{url}/consents",
        headers=coordinator.headers,
        json={"given_by": "subject", "scope": ["mentoring"], "given_on": date.today().isoformat()},
    )
    assert subject_consent.status_code == 422
    consent = await client.post(
        f"{url}/consents",
        headers=coordinator.headers,
        json={
            "given_by": "guardian",
            "guardian_name": "Kujdestari Provë",
            "scope": ["mentoring", "family_support"],
            "given_on": date.today().isoformat(),
        },
    )
    assert consent.status_code == 201, consent.text
    too_early = await move(client, coordinator, case_id, "support")
    assert too_early.status_code == 409
    assert "plan_has_intervention" in too_early.json()["unmet"]
    plan = await client.put(
        f"{url}/plan",
        json={"goals": "Mentoring and family support."},
        headers={**coordinator.headers, "If-Match": await etag(client, coordinator, case_id)},
    )
    assert plan.status_code == 200, plan.text
    intervention = await client.post(
        f"{url}/interventions",
        headers=coordinator.headers,
        json={
            "type": "family_support",
            "agency": "social_services",
            "start_date": date.today().isoformat(),
        },
    )
    assert intervention.status_code == 201, intervention.text
    assert (await move(client, coordinator, case_id, "support")).status_code == 200

    # the social services worker delivers; the teacher may not touch their intervention
    iid = intervention.json()["id"]
    teacher_try = await client.patch(
        f"{url}/interventions/{iid}",
        json={"status": "active"},
        headers={**teacher.headers, "If-Match": '"1"'},
    )
    assert teacher_try.status_code == 403
    started = await client.patch(
        f"{url}/interventions/{iid}",
        json={"status": "active"},
        headers={**social.headers, "If-Match": '"1"'},
    )
    assert started.status_code == 200, started.text
    done = await client.patch(
        f"{url}/interventions/{iid}",
        json={"status": "completed", "outcome": "Went well."},
        headers={**social.headers, "If-Match": started.headers["etag"]},
    )
    assert done.status_code == 200

    # a plan review, then exit to monitoring with post-exit reviews at +6 and +12 months
    review = await client.post(
        f"{url}/reviews", headers=coordinator.headers, json={"due_on": date.today().isoformat()}
    )
    assert review.status_code == 201
    recorded = await client.patch(
        f"{url}/reviews/{review.json()['id']}",
        json={"done_on": date.today().isoformat(), "outcome": "on_track"},
        headers={**coordinator.headers, "If-Match": '"1"'},
    )
    assert recorded.status_code == 200, recorded.text
    assert (await move(client, coordinator, case_id, "monitoring")).status_code == 409
    monitored = await move(client, coordinator, case_id, "monitoring", exit_reason="risk_reduced")
    assert monitored.status_code == 200, monitored.text
    post_exit = [r for r in monitored.json()["reviews"] if r["kind"] == "post_exit"]
    assert sorted(r["months_after_exit"] for r in post_exit) == [6, 12]
    today = date.today()
    assert date.fromisoformat(post_exit[0]["due_on"]) > today + timedelta(days=170)

    worklist = await client.get(
        "/api/v1/worklist", params={"days": 400}, headers=coordinator.headers
    )
    assert {i["review_id"] for i in worklist.json()} >= {r["id"] for r in post_exit}

    # closing needs both post-exit reviews
    early = await move(client, coordinator, case_id, "closed", outcome="support_completed")
    assert early.status_code == 409
    assert early.json()["unmet"] == ["post_exit_reviews_recorded"]
    for r in post_exit:
        ok = await client.patch(
            f"{url}/reviews/{r['id']}",
            json={"done_on": today.isoformat(), "outcome": "no_concern"},
            headers={**coordinator.headers, "If-Match": f'"{r["version"]}"'},
        )
        assert ok.status_code == 200
    closed = await move(client, coordinator, case_id, "closed", outcome="support_completed")
    assert closed.status_code == 200, closed.text
    final = closed.json()
    assert final["state"] == "closed"
    assert set(final["entered"]) == {
        "submitted",
        "screening",
        "assessment",
        "panel",
        "consent_pending",
        "support",
        "monitoring",
        "closed",
    }

    # the coordinator's view holds every record exactly as it was answered when written
    assert final["screening"] == screened.json()
    (decision,) = final["panel_decisions"]
    assert decision["id"] == decided.json()["id"]
    assert decision["meeting_id"] == meeting.json()["id"]
    assert (decision["rationale"], decision["dissent"], decision["dissenting_agencies"]) == (
        "Support through school and family.",
        "Would monitor more closely.",
        ["police"],
    )
    assert final["consents"] == [consent.json()]
    assert final["plan"] == plan.json()
    assert final["interventions"] == [done.json()]
    assert final["sections"]["general"]["assessments"] == [assessed.json()]
    assert final["sections"]["education"]["assessments"] == [school_view.json()]
    assert [r["id"] for r in final["reviews"]] == [review.json()["id"]] + [
        r["id"] for r in sorted(post_exit, key=lambda r: r["due_on"])
    ]

    # the referrer learns the stage and the coarse outcome, and nothing else
    theirs = await client.get(url, headers=referrer.headers)
    await _auditor_reconstructs_the_journey(client, app, signed_in, case_id, town)
    assert theirs.json() == {
        "id": case_id,
        "reference": theirs.json()["reference"],
        "stage": "closed",
        "outcome": "support_completed",
        "submitted_at": theirs.json()["submitted_at"],
        "closed_at": theirs.json()["closed_at"],
    }


async def test_referrer_withdraws_before_screening_only(client, town):
    case_id = await new_case(client, town.referrer)
    withdrawn = await move(client, town.referrer, case_id, "closed", outcome="withdrawn")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["stage"] == "closed"
    assert withdrawn.json()["outcome"] == "withdrawn"

    later = await new_case(client, town.referrer)
    await move(client, town.coordinator, later, "screening")
    refused = await move(client, town.referrer, later, "closed", outcome="withdrawn")
    assert refused.status_code == 409


async def test_immediate_risk_goes_to_the_police_from_any_active_state(client, town):
    case_id = await new_case(client, town.referrer)
    assert (
        await move(client, town.coordinator, case_id, "closed", outcome="referred_to_police")
    ).status_code == 409
    closed = await move(
        client,
        town.coordinator,
        case_id,
        "closed",
        outcome="referred_to_police",
        immediate_risk=True,
        reason="Credible threat reported today.",
    )
    assert closed.status_code == 200
    assert closed.json()["closure_outcome"] == "referred_to_police"


async def test_a_transitions_answer_is_the_case_as_read_right_after(client, app, town):
    """The answer's records are read with the case, before the transition; a transition
    that writes records of its own (post-exit reviews) must still answer with them."""
    coordinator, referrer = town.coordinator, town.referrer

    async def moved_and_read(actor, case_id: str, to: str, **extra) -> dict:
        answer = await move(client, actor, case_id, to, **extra)
        assert answer.status_code == 200, answer.text
        read = await client.get(f"/api/v1/cases/{case_id}", headers=actor.headers)
        assert answer.json() == read.json()
        assert answer.headers["etag"] == read.headers["etag"]
        return answer.json()

    withdrawn = await new_case(client, referrer)
    assert (await moved_and_read(referrer, withdrawn, "closed", outcome="withdrawn"))[
        "stage"
    ] == "closed"

    case_id = await new_case(client, referrer)
    note = await client.post(
        f"/api/v1/cases/{case_id}/notes",
        headers=coordinator.headers,
        json={"section": "general", "body": "Seen before the transition."},
    )
    assert note.status_code == 201, note.text
    screening = await moved_and_read(coordinator, case_id, "screening")
    assert [n["id"] for n in screening["sections"]["general"]["notes"]] == [note.json()["id"]]

    await force_state(app, case_id, "support")
    monitored = await moved_and_read(coordinator, case_id, "monitoring", exit_reason="risk_reduced")
    scheduled = [r for r in monitored["reviews"] if r["kind"] == "post_exit"]
    assert sorted(r["months_after_exit"] for r in scheduled) == [6, 12]
    assert all(r["done_on"] is None for r in scheduled)

    # back to assessment: the open post-exit reviews are cancelled, and the answer says so
    reassessed = await moved_and_read(coordinator, case_id, "assessment")
    cancelled = [r for r in reassessed["reviews"] if r["kind"] == "post_exit"]
    assert {r["id"] for r in cancelled} == {r["id"] for r in scheduled}
    assert {r["outcome"] for r in cancelled} == {"cancelled"}
    assert all(r["done_on"] == date.today().isoformat() for r in cancelled)


async def test_transition_needs_if_match_and_refuses_a_stale_one(client, town):
    case_id = await new_case(client, town.referrer)
    url = f"/api/v1/cases/{case_id}/transitions"
    missing = await client.post(url, json={"to": "screening"}, headers=town.coordinator.headers)
    assert missing.status_code == 428
    stale = await client.post(
        url, json={"to": "screening"}, headers={**town.coordinator.headers, "If-Match": '"999"'}
    )
    assert stale.status_code == 412
    current = await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
    assert current.json()["state"] == "submitted"


async def test_referrer_adds_information_but_never_reads_notes(client, town):
    case_id = await new_case(client, town.referrer)
    url = f"/api/v1/cases/{case_id}"
    added = await client.post(
        f"{url}/information",
        headers=town.referrer.headers,
        json={"body": "The student missed three days this week."},
    )
    assert added.status_code == 201
    assert (await client.get(f"{url}/notes", headers=town.referrer.headers)).status_code == 403
    notes = await client.get(f"{url}/notes", headers=town.coordinator.headers)
    assert [n["kind"] for n in notes.json()] == ["information"]


async def test_referral_validation_is_problem_json_without_echo(client, town):
    body = referral_body(given="Unique-Synthetic-Name-Qx")
    body["subject"]["date_of_birth"] = "2999-01-01"
    body["indicators"] = []
    response = await client.post(
        "/api/v1/referrals",
        json=body,
        headers={**town.referrer.headers, "Idempotency-Key": "validation-test-1"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    locations = {tuple(e["loc"]) for e in response.json()["errors"]}
    assert ("body", "subject", "date_of_birth") in locations
    assert ("body", "indicators") in locations
    assert "Unique-Synthetic-Name-Qx" not in response.text
    minor = referral_body()
    minor["subject"].pop("guardian")
    refused = await client.post(
        "/api/v1/referrals",
        json=minor,
        headers={**town.referrer.headers, "Idempotency-Key": "validation-test-2"},
    )
    assert refused.status_code == 422
    mass = referral_body(state="closed", municipality_id=str(town.municipality_id))
    assert (
        await client.post(
            "/api/v1/referrals",
            json=mass,
            headers={**town.referrer.headers, "Idempotency-Key": "validation-test-3"},
        )
    ).status_code == 422


async def _auditor_reconstructs_the_journey(client, app, signed_in, case_id, town) -> None:
    """From the trail alone: who read the case, who changed it, who was refused."""
    import json

    from sqlmodel import select

    from referral.audit import chain
    from referral.models import AuditEvent
    from referral.models.enums import Role

    _, auditor = await signed_in(Role.auditor)
    events, after = [], None
    while True:
        params = {"case_id": case_id, "limit": 100, **({"after": after} if after else {})}
        page = (await client.get("/api/v1/audit/events", params=params, headers=auditor)).json()
        events += page["items"]
        after = page["next_after"]
        if after is None:
            break
    by = lambda actor: str(actor.id)  # noqa: E731
    readers = {
        e["actor_user_id"]
        for e in events
        if e["action"] == "case.read" and e["outcome"] == "allowed"
    }
    assert readers == {by(town.referrer), by(town.coordinator)}
    writers = {
        e["actor_user_id"]
        for e in events
        if e["outcome"] == "allowed" and e["action"] not in ("case.read", "case.list")
    }
    assert writers >= {
        by(town.referrer),
        by(town.coordinator),
        by(town.panel[Agency.police]),
        by(town.panel[Agency.education]),
        by(town.panel[Agency.social_services]),
    }
    refused = {(e["actor_user_id"], e["action"]) for e in events if e["outcome"] == "denied"}
    assert (by(town.panel[Agency.education]), "case.read") in refused
    transitions = [e for e in events if e["action"] == "case.transition"]
    assert len(transitions) == 7
    async with app.state.sessionmaker() as session:
        stored = (await session.exec(select(AuditEvent))).all()
    async with app.state.sessionmaker() as session:
        assert (await chain.verify(session, app.state.audit_keys)).ok
    text = json.dumps([e.model_dump(mode="json") for e in stored])
    for secret in (
        "Testa",
        "Provëllari",
        "2010-05-17",
        "Synthetic description",
        "No conflicting operation",
        "Mentoring and family support",
    ):
        assert secret not in text, secret
