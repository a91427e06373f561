"""The second factor: enrolment, codes usable once, recovery codes, and no access token
from a password alone for the roles the policy names."""

from __future__ import annotations

import pyotp
import pytest

from referral.models.enums import Role
from tests.conftest import credentials, enrol

TOKEN = "/api/v1/auth/token"
REQUIRED = [Role.coordinator, Role.panel_member, Role.auditor, Role.admin]


def test_the_policy_names_the_roles_that_need_it(app):
    assert set(app.state.access_policy.second_factor.required_for) == set(REQUIRED)


@pytest.mark.parametrize("role", REQUIRED)
async def test_password_alone_gives_no_access_token(client, world, role):
    account = await world.account(role)
    response = await client.post(
        TOKEN, data={"username": account.username, "password": account.password}
    )
    assert response.status_code == 401
    assert "access_token" not in response.text
    assert response.json()["type"].endswith("second-factor-required")


async def test_first_sign_in_enrols_and_never_yields_an_access_token(client, app, world):
    from sqlalchemy import update

    from referral.models import User

    account = await world.account(Role.coordinator)
    async with app.state.sessionmaker() as s, s.begin():  # as if never enrolled
        await s.exec(
            update(User)
            .where(User.id == account.id)
            .values(totp_secret_enc=None, totp_enabled_at=None)
        )
    first = await client.post(
        TOKEN, data={"username": account.username, "password": account.password}
    )
    assert first.status_code == 403
    assert "access_token" not in first.json()
    token = first.json()["enrolment_token"]
    # the enrolment token opens nothing else
    assert (
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
    wrong = await client.post(
        "/api/v1/auth/second-factor/confirm",
        json={"code": "000000"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert wrong.status_code in (401, 403)
    secret, enrolled = await enrol(client, token)
    assert len(enrolled["recovery_codes"]) == 10
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {enrolled['access_token']}"}
    )
    assert me.json()["role"] == "coordinator"
    # enrolment is done once: the token cannot re-enrol the account
    again = await client.post(
        "/api/v1/auth/second-factor/enrolment", headers={"Authorization": f"Bearer {token}"}
    )
    assert again.status_code == 401
    # signing in later needs a code of a step after the one spent confirming
    import time

    account.totp_secret = secret
    account.last_step = int(time.time() // 30)
    later = await client.post(TOKEN, data=credentials(account))
    assert later.status_code == 200, later.text


async def test_a_replayed_code_is_refused(client, world):
    account = await world.account(Role.panel_member)
    code = pyotp.TOTP(account.totp_secret).now()
    form = {"username": account.username, "password": account.password, "totp_code": code}
    first = await client.post(TOKEN, data=form)
    assert first.status_code == 200, first.text
    replay = await client.post(TOKEN, data=form)
    assert replay.status_code == 401
    assert "access_token" not in replay.text


async def test_a_wrong_code_counts_towards_lock_out(client, world, settings):
    account = await world.account(Role.auditor)
    form = {"username": account.username, "password": account.password, "totp_code": "123456"}
    for _ in range(settings.login_max_failures):
        assert (await client.post(TOKEN, data=form)).status_code == 401
    assert (await client.post(TOKEN, data=credentials(account))).status_code == 429


async def test_recovery_codes_work_once_and_are_stored_hashed(client, app, world):
    from sqlalchemy import update
    from sqlmodel import select

    from referral.models import RecoveryCode, User

    account = await world.account(Role.admin)
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(
            update(User)
            .where(User.id == account.id)
            .values(totp_secret_enc=None, totp_enabled_at=None)
        )
    first = await client.post(
        TOKEN, data={"username": account.username, "password": account.password}
    )
    _, enrolled = await enrol(client, first.json()["enrolment_token"])
    code = enrolled["recovery_codes"][0]
    async with app.state.sessionmaker() as s:
        stored = (
            await s.exec(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == account.id))
        ).all()
    assert len(stored) == 10
    assert code not in stored
    assert all(len(h) == 64 for h in stored)
    form = {"username": account.username, "password": account.password, "recovery_code": code}
    assert (await client.post(TOKEN, data=form)).status_code == 200
    assert (await client.post(TOKEN, data=form)).status_code == 401


async def test_roles_without_the_requirement_sign_in_with_a_password(client, world):
    for role in (Role.referrer, Role.analyst, Role.national_analyst):
        account = await world.account(role)
        response = await client.post(
            TOKEN, data={"username": account.username, "password": account.password}
        )
        assert response.status_code == 200, role
