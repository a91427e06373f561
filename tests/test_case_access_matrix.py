"""Every case route x every role x every relation gives what the design says.

The oracle below is written from DESIGN.md's role table, not read from policies/access.yaml,
so a policy edit that widens access fails here. Writes carry a stale If-Match, so a request
that passes authorisation still changes nothing (checked at the end).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

import httpx
import pytest
from sqlmodel import func, select

from referral.cases.schemas import CoordinatorCaseView, PanelCaseView, ReferrerCaseView
from referral.models import AuditEvent
from referral.models.enums import Agency, Role
from tests.case_world import Actor, force_state, make_town, new_case
from tests.conftest import World, bearer, login
from tests.routes import api_routes, guards

TODAY = date.today().isoformat()
CASE_ACTIONS = {
    Role.referrer: {"create", "list", "read", "transition", "add_information"},
    Role.coordinator: {
        "create",
        "list",
        "read",
        "transition",
        "add_information",
        "add_note",
        "read_notes",
        "screen",
        "assess",
        "read_assessments",
        "consent",
        "manage_plan",
        "update_intervention",
        "review",
        "worklist",
        "break_glass",
        "legal_hold",
        "erase",
        "export",
    },
    Role.panel_member: {
        "list",
        "read",
        "add_note",
        "read_notes",
        "assess",
        "read_assessments",
        "update_intervention",
        "break_glass",
    },
}
ALL_SECTIONS = {"general", "police", "health", "social", "education", "faith"}
SECTIONS_FOR_AGENCY = {
    Agency.police: ALL_SECTIONS - {"health"},
    Agency.health: ALL_SECTIONS - {"police"},
}
WRITES_IN = {
    Agency.police: "police",
    Agency.health: "health",
    Agency.social_services: "social",
    Agency.education: "education",
    Agency.faith: "faith",
    Agency.civil_society: "general",
    Agency.municipality: "general",
}
BODIES = {
    ("POST", "/api/v1/cases/{case_id}/transitions"): {"to": "monitoring"},
    ("POST", "/api/v1/cases/{case_id}/information"): {"body": "More information."},
    ("POST", "/api/v1/cases/{case_id}/notes"): {"section": "general", "body": "A note."},
    ("PUT", "/api/v1/cases/{case_id}/screening"): {"summary": "Screened."},
    ("POST", "/api/v1/cases/{case_id}/assessments"): {
        "factors": [{"dimension": "intent", "factor": "stated_intent", "score": 1}]
    },
    ("POST", "/api/v1/cases/{case_id}/consents"): {
        "given_by": "guardian",
        "guardian_name": "Kujdestari",
        "scope": ["mentoring"],
        "given_on": TODAY,
    },
    ("POST", "/api/v1/cases/{case_id}/consents/{consent_id}/withdrawal"): {"withdrawn_on": TODAY},
    ("PUT", "/api/v1/cases/{case_id}/plan"): {"goals": "Goals."},
    ("POST", "/api/v1/cases/{case_id}/interventions"): {"type": "mentoring", "agency": "education"},
    ("PATCH", "/api/v1/cases/{case_id}/interventions/{intervention_id}"): {"status": "active"},
    ("POST", "/api/v1/cases/{case_id}/reviews"): {"due_on": TODAY},
    ("PATCH", "/api/v1/cases/{case_id}/reviews/{review_id}"): {
        "done_on": TODAY,
        "outcome": "on_track",
    },
    # too short a reason: refused after authorisation, so no grant changes the fixture
    ("POST", "/api/v1/cases/{case_id}/break-glass"): {"reason": "short"},
    ("PUT", "/api/v1/cases/{case_id}/legal-hold"): {"reason": "Litigation notice received."},
    ("POST", "/api/v1/cases/{case_id}/legal-hold/release"): {"reason": "Proceedings ended."},
    ("POST", "/api/v1/cases/{case_id}/erase"): {"reason": "The subject asked for erasure."},
}
PROBLEM_KEYS = {
    "type",
    "title",
    "status",
    "detail",
    "instance",
    "state",
    "allowed",
    "unmet",
    "errors",
}


@dataclass
class Who:
    label: str
    actor: Actor
    role: Role
    agency: Agency
    town: str | None


@dataclass
class Case:
    label: str
    id: str
    town: str
    owner: str
    reached: set[str]


def visible(who: Who, case: Case) -> bool:
    if who.role is Role.referrer:
        return who.label == case.owner
    if who.town != case.town:
        return False
    if who.role is Role.coordinator:
        return True
    if who.role is Role.panel_member:
        return ("screening" if who.agency is Agency.police else "panel") in case.reached
    return False


def expected(who: Who, action: str, case: Case) -> str:
    if action not in CASE_ACTIONS.get(who.role, set()):
        return "403"
    if action == "break_glass":  # asked for precisely where the actor cannot see
        return "pass"
    return "pass" if visible(who, case) else "404"


def outcome(response: httpx.Response) -> str:
    if response.status_code in (401, 403):
        return str(response.status_code)
    if response.status_code == 404 and response.json().get("detail") == "No such case.":
        return "404"
    return "pass"


async def _national(client, world: World, role: Role) -> Actor:
    account = await world.account(role, agency=Agency.municipality)
    return Actor(account, bearer(await login(client, account)))


@pytest.fixture(scope="module")
async def matrix(app):
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        world = World(app)
        a, b = await make_town(client, world), await make_town(client, world)
        people = [
            Who("A.owner", a.referrer, Role.referrer, Agency.education, "A"),
            Who("A.referrer", a.other_referrer, Role.referrer, Agency.health, "A"),
            Who("A.coordinator", a.coordinator, Role.coordinator, Agency.municipality, "A"),
            Who("A.analyst", a.analyst, Role.analyst, Agency.municipality, "A"),
            *[
                Who(f"A.panel.{ag.value}", actor, Role.panel_member, ag, "A")
                for ag, actor in a.panel.items()
            ],
            Who("B.coordinator", b.coordinator, Role.coordinator, Agency.municipality, "B"),
            Who("B.referrer", b.referrer, Role.referrer, Agency.education, "B"),
            Who("B.panel.police", b.panel[Agency.police], Role.panel_member, Agency.police, "B"),
            Who(
                "B.panel.education",
                b.panel[Agency.education],
                Role.panel_member,
                Agency.education,
                "B",
            ),
            Who(
                "national_analyst",
                await _national(client, world, Role.national_analyst),
                Role.national_analyst,
                Agency.municipality,
                None,
            ),
            Who(
                "auditor",
                await _national(client, world, Role.auditor),
                Role.auditor,
                Agency.municipality,
                None,
            ),
            Who(
                "admin",
                await _national(client, world, Role.admin),
                Role.admin,
                Agency.municipality,
                None,
            ),
        ]
        path = ("submitted", "screening", "assessment", "panel")
        cases = []
        for label, town, maker, owner, state in (
            ("A.submitted", "A", a.referrer, "A.owner", "submitted"),
            ("A.screening", "A", a.referrer, "A.owner", "screening"),
            ("A.panel", "A", a.referrer, "A.owner", "panel"),
            ("B.panel", "B", b.referrer, "B.referrer", "panel"),
        ):
            case_id = await new_case(client, maker)
            await force_state(app, case_id, state)
            cases.append(Case(label, case_id, town, owner, set(path[: path.index(state) + 1])))
        yield client, people, cases, a


def _case_routes(app):
    routes = [(i, guards(i.route)[0]) for i in api_routes(app) if "{case_id}" in i.path]
    assert len(routes) >= 15
    # every route the matrix has a body for is really there (an unmounted one would hide)
    assert set(BODIES) <= {(i.method, i.path) for i, _ in routes}
    return routes


def _request_for(info, who: Who, case: Case) -> dict:
    url = info.path.replace("{case_id}", case.id)
    for name in ("consent_id", "intervention_id", "review_id"):
        url = url.replace(f"{{{name}}}", str(uuid.uuid4()))
    body = BODIES.get((info.method, info.path))
    if info.method != "GET":
        assert body is not None, f"add a body for {info.method} {info.path} to BODIES"
        if info.path.endswith("/notes"):
            body = {**body, "section": WRITES_IN[who.agency]}
    return {
        "method": info.method,
        "url": url,
        "json": body,
        "headers": {**who.actor.headers, "If-Match": '"0"'},
    }


async def _versions(client, coordinators: dict[str, Actor], cases: list[Case]) -> dict:
    versions = {}
    for case in cases:
        r = await client.get(f"/api/v1/cases/{case.id}", headers=coordinators[case.town].headers)
        versions[case.label] = r.json()["version"]
    return versions


async def _denied_events(app) -> int:
    async with app.state.sessionmaker() as s:
        return (
            await s.exec(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.outcome == "denied")
            )
        ).one()


async def test_every_case_route_for_every_role_and_relation(app, matrix):
    client, people, cases, _ = matrix
    coordinators = {w.town: w.actor for w in people if w.role is Role.coordinator}
    before = await _versions(client, coordinators, cases)
    denied_before = await _denied_events(app)
    mismatches, denials, checked = [], 0, 0
    for info, guard in _case_routes(app):
        for who in people:
            for case in cases:
                response = await client.request(**_request_for(info, who, case))
                got, want = outcome(response), expected(who, guard.action, case)
                checked += 1
                if got != want:
                    mismatches.append(
                        f"{who.label} {info.method} {info.path} on {case.label}:"
                        f" got {response.status_code}, expected {want}"
                    )
                if response.status_code in (403, 404):
                    denials += 1
                    assert set(response.json()) <= PROBLEM_KEYS  # no case data in a denial
    assert mismatches == []
    assert checked > 1000
    assert await _versions(client, coordinators, cases) == before  # nothing changed
    assert await _denied_events(app) - denied_before == denials  # every denial audited


async def test_each_role_gets_exactly_its_fields_and_sections(matrix):
    client, people, cases, _ = matrix
    for who in people:
        for case in cases:
            response = await client.get(f"/api/v1/cases/{case.id}", headers=who.actor.headers)
            if outcome(response) != "pass":
                continue
            body = response.json()
            if who.role is Role.referrer:
                assert set(body) == set(ReferrerCaseView.model_fields), who.label
                continue
            model = CoordinatorCaseView if who.role is Role.coordinator else PanelCaseView
            assert set(body) == set(model.model_fields), who.label
            sections = (
                ALL_SECTIONS
                if who.role is Role.coordinator
                else (SECTIONS_FOR_AGENCY.get(who.agency, ALL_SECTIONS - {"police", "health"}))
            )
            assert set(body["sections"]) == sections, who.label


async def test_list_shows_exactly_the_cases_in_scope(matrix):
    client, people, cases, _ = matrix
    ids = {c.id: c for c in cases}
    for who in people:
        response = await client.get(
            "/api/v1/cases", params={"limit": 100}, headers=who.actor.headers
        )
        if "list" not in CASE_ACTIONS.get(who.role, set()):
            assert response.status_code == 403, who.label
            continue
        listed = {item["id"] for item in response.json()["items"]} & set(ids)
        assert listed == {c.id for c in cases if visible(who, c)}, who.label
        if who.role is Role.referrer:
            for item in response.json()["items"]:
                assert set(item) == set(ReferrerCaseView.model_fields)


async def test_referrer_never_sees_notes_or_assessments(app, matrix):
    client, people, cases, town_a = matrix
    owner = next(w for w in people if w.label == "A.owner")
    case = next(c for c in cases if c.label == "A.panel")
    await client.post(
        f"/api/v1/cases/{case.id}/notes",
        headers=town_a.coordinator.headers,
        json={"section": "general", "body": "Agency reasoning."},
    )
    seen = await client.get(f"/api/v1/cases/{case.id}", headers=owner.actor.headers)
    assert "Agency reasoning" not in seen.text
    assert "sections" not in seen.json()
    for path in ("notes", "assessments"):
        response = await client.get(f"/api/v1/cases/{case.id}/{path}", headers=owner.actor.headers)
        assert response.status_code == 403


async def test_only_referrers_and_coordinators_refer(matrix):
    client, people, _, _ = matrix
    from tests.case_world import submit

    for who in people:
        response = await submit(client, who.actor)
        allowed = who.role in (Role.referrer, Role.coordinator)
        assert response.status_code == (201 if allowed else 403), who.label


async def test_worklist_is_the_coordinators(matrix):
    client, people, _, _ = matrix
    for who in people:
        response = await client.get("/api/v1/worklist", headers=who.actor.headers)
        assert response.status_code == (200 if who.role is Role.coordinator else 403), who.label


async def test_panel_meetings_by_role_and_municipality(matrix):
    client, people, cases, town_a = matrix
    created = await client.post(
        "/api/v1/panel-meetings",
        headers=town_a.coordinator.headers,
        json={"meeting_date": TODAY, "attendance": ["police"]},
    )
    assert created.status_code == 201
    meeting = created.json()["id"]
    case_a = next(c for c in cases if c.label == "A.panel")
    for who in people:
        read = await client.get(f"/api/v1/panel-meetings/{meeting}", headers=who.actor.headers)
        decide = await client.post(
            f"/api/v1/panel-meetings/{meeting}/decisions",
            headers={**who.actor.headers, "If-Match": '"0"'},
            json={"case_id": case_a.id, "decision": "adopt", "rationale": "Because."},
        )
        if who.role in (Role.coordinator, Role.panel_member):
            assert read.status_code == (200 if who.town == "A" else 404), who.label
        else:
            assert read.status_code == 403, who.label
        if who.role is Role.coordinator:
            assert decide.status_code == (412 if who.town == "A" else 404), who.label
        else:
            assert decide.status_code == 403, who.label
