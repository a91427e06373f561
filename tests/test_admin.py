"""The admin API: only admins, strict bodies, concurrency, placement rules, no case data."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from referral.models import AuditEvent
from referral.models.enums import Agency, Role
from tests.conftest import bearer, credentials, enrol
from tests.routes import api_routes, concrete_path

NON_ADMIN_ROLES = [r for r in Role if r is not Role.admin]
USERS = "/api/v1/admin/users"


def _admin_routes(app):
    return [i for i in api_routes(app) if i.path.startswith("/api/v1/admin")]


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
async def test_every_admin_endpoint_is_403_for_every_other_role(client, app, signed_in, role):
    _, headers = await signed_in(role)
    routes = _admin_routes(app)
    assert len(routes) >= 13
    for info in routes:
        response = await client.request(info.method, concrete_path(info), headers=headers, json={})
        assert response.status_code == 403, f"{role} {info.method} {info.path}"
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_denied_admin_attempt_is_audited(client, app, signed_in):
    account, headers = await signed_in(Role.coordinator)
    target = uuid.uuid4()
    assert (await client.get(f"{USERS}/{target}", headers=headers)).status_code == 403
    async with app.state.sessionmaker() as s:
        events = (
            await s.exec(select(AuditEvent).where(AuditEvent.actor_user_id == account.id))
        ).all()
    denied = [e for e in events if e.outcome == "denied"]
    assert len(denied) == 1
    assert denied[0].status_code == 403
    assert denied[0].resource_ids == [str(target)]
    assert denied[0].actor_role == "coordinator"


async def test_admin_creates_and_reads_a_user(client, signed_in, world):
    _, admin = await signed_in(Role.admin)
    municipality = await world.municipality()
    organisation = await world.organisation(Agency.health, municipality)
    body = {
        "username": "new.health.worker",
        "display_name": "Synthetic Health Worker",
        "role": "panel_member",
        "organisation_id": str(organisation.id),
        "municipality_id": str(municipality.id),
        "password": "a long enough password",
    }
    created = await client.post(USERS, json=body, headers=admin)
    assert created.status_code == 201, created.text
    user = created.json()
    assert "password" not in created.text
    assert "password_hash" not in user
    assert created.headers["etag"] == '"1"'
    read = await client.get(f"{USERS}/{user['id']}", headers=admin)
    assert read.json() == user
    again = await client.post(USERS, json=body, headers=admin)
    assert again.status_code == 409
    signed = await client.post(
        "/api/v1/auth/token",
        data={"username": "new.health.worker", "password": "a long enough password"},
    )
    assert signed.status_code == 403  # a panel member must enrol a second factor first
    _, enrolled = await enrol(client, signed.json()["enrolment_token"])
    assert enrolled["access_token"]


async def test_no_default_accounts_exist(app):
    from referral.models import User

    async with app.state.sessionmaker() as s:
        names = (await s.exec(select(User.username))).all()
    assert not {"admin", "root", "administrator", "demo.admin"} & set(names)


@pytest.mark.parametrize(
    ("role", "with_municipality", "problem_field"),
    [
        ("coordinator", False, "municipality_id"),
        ("admin", True, "municipality_id"),
        ("auditor", True, "municipality_id"),
    ],
)
async def test_placement_rules(client, signed_in, world, role, with_municipality, problem_field):
    _, admin = await signed_in(Role.admin)
    municipality = await world.municipality()
    organisation = await world.organisation(Agency.municipality, None)
    body = {
        "username": f"placed.{uuid.uuid4().hex[:8]}",
        "display_name": "Synthetic",
        "role": role,
        "organisation_id": str(organisation.id),
        "municipality_id": str(municipality.id) if with_municipality else None,
        "password": "a long enough password",
    }
    response = await client.post(USERS, json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", problem_field]


async def test_organisation_of_another_municipality_is_refused(client, signed_in, world):
    _, admin = await signed_in(Role.admin)
    here, there = await world.municipality(), await world.municipality()
    organisation = await world.organisation(Agency.police, there)
    response = await client.post(
        USERS,
        json={
            "username": f"misplaced.{uuid.uuid4().hex[:8]}",
            "display_name": "Synthetic",
            "role": "panel_member",
            "organisation_id": str(organisation.id),
            "municipality_id": str(here.id),
            "password": "a long enough password",
        },
        headers=admin,
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "extra",
    [
        {"id": "00000000-0000-0000-0000-000000000001"},
        {"is_active": False, "password_hash": "x"},
        {"version": 99},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
)
async def test_mass_assignment_on_create_is_422_and_creates_nothing(
    client, signed_in, world, extra
):
    _, admin = await signed_in(Role.admin)
    municipality = await world.municipality()
    organisation = await world.organisation(Agency.education, municipality)
    username = f"mass.{uuid.uuid4().hex[:8]}"
    body = {
        "username": username,
        "display_name": "Synthetic",
        "role": "referrer",
        "organisation_id": str(organisation.id),
        "municipality_id": str(municipality.id),
        "password": "a long enough password",
        **extra,
    }
    response = await client.post(USERS, json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "extra_forbidden"
    login = await client.post(
        "/api/v1/auth/token", data={"username": username, "password": "a long enough password"}
    )
    assert login.status_code == 401


@pytest.mark.parametrize(
    "extra",
    [
        {"id": str(uuid.uuid4())},
        {"username": "renamed.user"},
        {"password_hash": "x"},
        {"version": 7},
    ],
)
async def test_mass_assignment_on_update_is_422_and_changes_nothing(
    client, signed_in, world, extra
):
    _, admin = await signed_in(Role.admin)
    target = await world.account(Role.referrer)
    before = await client.get(f"{USERS}/{target.id}", headers=admin)
    response = await client.patch(
        f"{USERS}/{target.id}",
        json={"display_name": "Changed", **extra},
        headers={**admin, "If-Match": before.headers["etag"]},
    )
    assert response.status_code == 422
    after = await client.get(f"{USERS}/{target.id}", headers=admin)
    assert after.json() == before.json()


async def test_role_in_the_login_form_is_ignored(client, world):
    # The sign-in form has no role field; an attacker adding one gets an ordinary token.
    account = await world.account(Role.referrer)
    response = await client.post(
        "/api/v1/auth/token",
        data={"username": account.username, "password": account.password, "role": "admin"},
    )
    assert response.status_code == 200
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["role"] == "referrer"


async def test_update_needs_if_match_and_refuses_a_stale_one(client, signed_in, world):
    _, admin = await signed_in(Role.admin)
    target = await world.account(Role.referrer)
    url = f"{USERS}/{target.id}"
    etag = (await client.get(url, headers=admin)).headers["etag"]
    missing = await client.patch(url, json={"display_name": "One"}, headers=admin)
    assert missing.status_code == 428
    ok = await client.patch(url, json={"display_name": "One"}, headers={**admin, "If-Match": etag})
    assert ok.status_code == 200
    assert ok.headers["etag"] != etag
    stale = await client.patch(
        url, json={"display_name": "Two"}, headers={**admin, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert (await client.get(url, headers=admin)).json()["display_name"] == "One"


async def test_admin_password_reset_ends_sessions(client, signed_in, world):
    _, admin = await signed_in(Role.admin)
    target, target_headers = await signed_in(Role.coordinator)
    url = f"{USERS}/{target.id}"
    etag = (await client.get(url, headers=admin)).headers["etag"]
    response = await client.post(
        f"{url}/password",
        json={"new_password": "reset by the administrator"},
        headers={**admin, "If-Match": etag},
    )
    assert response.status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=target_headers)).status_code == 401


async def test_municipality_and_organisation_admin(client, signed_in):
    _, admin = await signed_in(Role.admin)
    code = f"testburg-{uuid.uuid4().hex[:6]}"
    created = await client.post(
        "/api/v1/admin/municipalities",
        json={"code": code, "name": "Testburg", "region": "Peja"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    municipality = created.json()
    duplicate = await client.post(
        "/api/v1/admin/municipalities",
        json={"code": code, "name": "Testburg", "region": "Peja"},
        headers=admin,
    )
    assert duplicate.status_code == 409
    bad_region = await client.post(
        "/api/v1/admin/municipalities",
        json={"code": f"x{code}", "name": "Testburg", "region": "Atlantis"},
        headers=admin,
    )
    assert bad_region.status_code == 422
    organisation = await client.post(
        "/api/v1/admin/organisations",
        json={"name": "Testburg police", "agency": "police", "municipality_id": municipality["id"]},
        headers=admin,
    )
    assert organisation.status_code == 201
    renamed = await client.patch(
        f"/api/v1/admin/organisations/{organisation.json()['id']}",
        json={"name": "Testburg police station"},
        headers={**admin, "If-Match": organisation.headers["etag"]},
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Testburg police station"
    missing = await client.get(f"/api/v1/admin/organisations/{uuid.uuid4()}", headers=admin)
    assert missing.status_code == 404


async def test_user_list_is_paged_with_a_cursor_and_limit_capped(client, signed_in, world):
    _, admin = await signed_in(Role.admin)
    for _ in range(3):
        await world.account(Role.referrer)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(USERS, params=params, headers=admin)).json()
        assert len(page["items"]) <= 2
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 4
    too_many = await client.get(USERS, params={"limit": 101}, headers=admin)
    assert too_many.status_code == 422


async def test_admin_has_no_grant_on_anything_but_the_directory(app):
    policy = app.state.access_policy
    grants = set(policy.roles[Role.admin].grants) | set(policy.common)
    assert grants <= {"municipality", "organisation", "user", "account"}


async def test_admin_sees_no_case_data_anywhere(client, app, signed_in):
    _, admin = await signed_in(Role.admin)
    for info in api_routes(app):
        if info.method != "GET" or info.path.startswith(("/api/v1/admin", "/api/v1/auth")):
            continue
        if not info.path.startswith("/api/v1"):
            continue
        response = await client.get(concrete_path(info), headers=admin)
        assert response.status_code in (403, 404), info.path


async def _reset_second_factor(client, admin: dict, user_id, etag: str | None) -> object:
    headers = {**admin, **({"If-Match": etag} if etag else {})}
    return await client.post(f"{USERS}/{user_id}/second-factor/reset", headers=headers)


async def test_a_second_factor_reset_makes_the_user_enrol_again(client, app, signed_in):
    admin_account, admin = await signed_in(Role.admin)
    target, target_headers = await signed_in(Role.coordinator)
    old_code = target.next_code()
    etag = (await client.get(f"{USERS}/{target.id}", headers=admin)).headers["etag"]

    assert (await _reset_second_factor(client, admin, target.id, None)).status_code == 428
    reset = await _reset_second_factor(client, admin, target.id, etag)
    assert reset.status_code == 204, reset.text

    # their sessions ended, and the old authenticator no longer signs them in
    assert (await client.get("/api/v1/auth/me", headers=target_headers)).status_code == 401
    form = {"username": target.username, "password": target.password, "totp_code": old_code}
    again = await client.post("/api/v1/auth/token", data=form)
    assert again.status_code == 403, again.text
    assert again.json()["type"].endswith("second-factor-enrolment-required")
    secret, tokens = await enrol(client, again.json()["enrolment_token"])
    assert secret != target.totp_secret
    me = await client.get("/api/v1/auth/me", headers=bearer(tokens))
    assert me.json()["id"] == str(target.id)

    async with app.state.sessionmaker() as s:
        found = select(AuditEvent).where(AuditEvent.action == "admin.user.reset_second_factor")
        events = [e for e in (await s.exec(found)).all() if e.resource_ids == [str(target.id)]]
    assert [(e.actor_user_id, e.outcome) for e in events] == [(admin_account.id, "allowed")]


async def test_a_stale_second_factor_reset_changes_nothing(client, signed_in):
    _, admin = await signed_in(Role.admin)
    target, target_headers = await signed_in(Role.coordinator)
    url = f"{USERS}/{target.id}"
    etag = (await client.get(url, headers=admin)).headers["etag"]
    renamed = await client.patch(
        url, json={"display_name": "Renamed"}, headers={**admin, "If-Match": etag}
    )
    assert renamed.status_code == 200
    assert (await _reset_second_factor(client, admin, target.id, etag)).status_code == 412
    assert (await client.get("/api/v1/auth/me", headers=target_headers)).status_code == 200
    assert (await client.post("/api/v1/auth/token", data=credentials(target))).status_code == 200


async def test_an_administrator_cannot_reset_their_own_second_factor(client, app, signed_in):
    admin_account, admin = await signed_in(Role.admin)
    etag = (await client.get(f"{USERS}/{admin_account.id}", headers=admin)).headers["etag"]
    refused = await _reset_second_factor(client, admin, admin_account.id, etag)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/api/v1/auth/me", headers=admin)).status_code == 200
    async with app.state.sessionmaker() as s:
        mine = select(AuditEvent).where(AuditEvent.actor_user_id == admin_account.id)
        denied = [e for e in (await s.exec(mine)).all() if e.outcome == "denied"]
    assert [(e.status_code, e.resource_ids) for e in denied] == [(403, [str(admin_account.id)])]
