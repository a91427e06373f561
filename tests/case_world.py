"""A world to test cases in: two towns, every role and agency, referrals made over HTTP."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import date

import httpx
from sqlalchemy import update

from referral.models import CaseFile
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from tests.conftest import Account, World, bearer, login

HAPPY_PATH = (
    "submitted",
    "screening",
    "assessment",
    "panel",
    "consent_pending",
    "support",
    "monitoring",
    "closed",
)
_counter = itertools.count()


def referral_body(
    given: str = "Testa",
    family: str = "Provëllari",
    born: date = date(2010, 5, 17),
    description: str | None = None,
    **overrides,
) -> dict:
    n = next(_counter)
    body = {
        "subject": {
            "given_name": given,
            "family_name": family,
            "date_of_birth": born.isoformat(),
            "gender": "female",
            "address": f"Rruga e Provës {n}, Testqytet",
            "contacts": f"+383 00 000 {n:03d}",
            "guardian": {"name": "Kujdestari Provë", "relationship": "parent"},
            "languages": ["sq"],
        },
        "primary_concern": "religiously_motivated",
        "description": description or f"Synthetic description number {n} for testing only.",
        "indicators": ["sudden_behaviour_change", "online_radicalisation"],
        "urgency": "priority",
    }
    body.update(overrides)
    return body


@dataclass
class Actor:
    account: Account
    headers: dict[str, str]

    @property
    def id(self) -> uuid.UUID:
        return self.account.id


@dataclass
class Town:
    municipality_id: uuid.UUID
    referrer: Actor
    other_referrer: Actor
    coordinator: Actor
    analyst: Actor
    panel: dict[Agency, Actor] = field(default_factory=dict)


async def _actor(client: httpx.AsyncClient, world: World, role: Role, **kw) -> Actor:
    account = await world.account(role, **kw)
    return Actor(account, bearer(await login(client, account)))


async def make_town(client: httpx.AsyncClient, world: World) -> Town:
    municipality = await world.municipality()
    make = lambda role, agency=Agency.education: _actor(  # noqa: E731
        client, world, role, agency=agency, municipality=municipality
    )
    town = Town(
        municipality_id=municipality.id,
        referrer=await make(Role.referrer),
        other_referrer=await make(Role.referrer, Agency.health),
        coordinator=await make(Role.coordinator, Agency.municipality),
        analyst=await make(Role.analyst, Agency.municipality),
    )
    for agency in Agency:
        town.panel[agency] = await make(Role.panel_member, agency)
    return town


async def submit(
    client: httpx.AsyncClient, actor: Actor, body: dict | None = None, key: str | None = None
) -> httpx.Response:
    return await client.post(
        "/api/v1/referrals",
        json=body or referral_body(),
        headers={**actor.headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def new_case(client: httpx.AsyncClient, actor: Actor, body: dict | None = None) -> str:
    response = await submit(client, actor, body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def force_state(app, case_id: str, state: str) -> None:
    """Test setup only: put a case in a state as if it had travelled the happy path."""
    now = utcnow()
    reached = HAPPY_PATH[: HAPPY_PATH.index(state) + 1]
    values = {f"{s}_at": now for s in reached} | {"state": state}
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(update(CaseFile).where(CaseFile.id == uuid.UUID(case_id)).values(**values))


async def etag(client: httpx.AsyncClient, actor: Actor, case_id: str) -> str:
    response = await client.get(f"/api/v1/cases/{case_id}", headers=actor.headers)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


async def screen_and_assess(
    client, app, actor: Actor, case_id: str, screening: str, assessment: dict
) -> None:
    """Test setup: screen a submitted case, put it before the panel, record an assessment."""
    assert (await move(client, actor, case_id, "screening")).status_code == 200
    screened = await client.put(
        f"/api/v1/cases/{case_id}/screening",
        json={"summary": screening},
        headers={**actor.headers, "If-Match": await etag(client, actor, case_id)},
    )
    assert screened.status_code == 200, screened.text
    await force_state(app, case_id, "panel")
    assessed = await client.post(
        f"/api/v1/cases/{case_id}/assessments", headers=actor.headers, json=assessment
    )
    assert assessed.status_code == 201, assessed.text


async def move(client, actor: Actor, case_id: str, to: str, **extra) -> httpx.Response:
    return await client.post(
        f"/api/v1/cases/{case_id}/transitions",
        json={"to": to, **extra},
        headers={**actor.headers, "If-Match": await etag(client, actor, case_id)},
    )
