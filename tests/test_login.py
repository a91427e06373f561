"""Sign-in, refresh rotation, lock-out."""

from __future__ import annotations

import asyncio

from referral.models.enums import Role
from tests.conftest import bearer, login

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/refresh"


async def _attempt(client, username: str, password: str):
    return await client.post(TOKEN, data={"username": username, "password": password})


async def test_sign_in_returns_a_15_minute_access_token_and_a_refresh_token(client, world):
    account = await world.account(Role.referrer)
    response = await _attempt(client, account.username, account.password)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["access_token"]
    assert body["refresh_token"]
    assert response.headers["cache-control"] == "no-store"


async def test_wrong_password_and_unknown_user_look_the_same(client, world):
    account = await world.account(Role.referrer)
    wrong = await _attempt(client, account.username, "not the right password")
    unknown = await _attempt(client, "nobody.at.all", "not the right password")
    assert wrong.status_code == unknown.status_code == 401
    strip = lambda r: {k: v for k, v in r.json().items() if k != "instance"}  # noqa: E731
    assert strip(wrong) == strip(unknown)
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"


async def test_username_is_case_insensitive(client, world):
    account = await world.account(Role.referrer)
    response = await _attempt(client, f"  {account.username.upper()} ", account.password)
    assert response.status_code == 200


async def test_lockout_after_repeated_failures_with_retry_after(client, world, settings):
    account = await world.account(Role.panel_member)
    for _ in range(settings.login_max_failures):
        assert (await _attempt(client, account.username, "wrong password!!")).status_code == 401
    locked = await _attempt(client, account.username, account.password)  # even the right one
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= settings.login_backoff_base_seconds - 1
    assert locked.headers["content-type"].startswith("application/problem+json")


async def test_lockout_backs_off_and_unknown_accounts_lock_the_same(client, world, app):
    from sqlalchemy import update

    from referral.models import LoginThrottle
    from referral.models.base import utcnow

    settings = app.state.settings
    name = "ghost.account.never.created"
    for _ in range(settings.login_max_failures):
        assert (await _attempt(client, name, "wrong password!!")).status_code == 401
    first = await _attempt(client, name, "wrong password!!")
    assert first.status_code == 429
    # Let the lock lapse, fail again: the next lock is longer (exponential back-off).
    async with app.state.sessionmaker() as s, s.begin():
        await s.exec(update(LoginThrottle).values(locked_until=utcnow()))
    assert (await _attempt(client, name, "wrong password!!")).status_code == 401
    second = await _attempt(client, name, "wrong password!!")
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) > int(first.headers["retry-after"])


async def test_success_resets_the_failure_count(client, world, settings):
    account = await world.account(Role.referrer)
    for _ in range(settings.login_max_failures - 1):
        await _attempt(client, account.username, "wrong password!!")
    assert (await _attempt(client, account.username, account.password)).status_code == 200
    for _ in range(settings.login_max_failures - 1):
        assert (await _attempt(client, account.username, "wrong password!!")).status_code == 401


async def test_128_character_non_ascii_password_works(client, world):
    password = ("Ëjë çështje ñ 密码 ✓ " * 10)[:128]
    assert len(password) == 128
    account = await world.account(Role.referrer, password=password)
    assert (await _attempt(client, account.username, password)).status_code == 200


async def test_11_and_129_character_passwords_are_refused_without_echo(client, world):
    account = await world.account(Role.referrer)
    tokens = await login(client, account)
    for bad in ("Short-pw-11", "L" * 129):
        assert len(bad) in (11, 129)
        at_login = await _attempt(client, account.username, bad)
        change = await client.post(
            "/api/v1/auth/password",
            json={"current_password": account.password, "new_password": bad},
            headers=bearer(tokens),
        )
        for response in (at_login, change):
            assert response.status_code == 422
            assert response.headers["content-type"].startswith("application/problem+json")
            assert bad not in response.text
    # nothing changed: the old password still works
    assert (await _attempt(client, account.username, account.password)).status_code == 200


async def test_change_password_with_wrong_current_password_is_refused(client, world):
    account = await world.account(Role.referrer)
    tokens = await login(client, account)
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "definitely wrong!", "new_password": "another long password"},
        headers=bearer(tokens),
    )
    assert response.status_code == 403
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200


async def test_refresh_rotates(client, world):
    account = await world.account(Role.coordinator)
    first = await login(client, account)
    response = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/api/v1/auth/me", headers=bearer(second))).status_code == 200


async def test_refresh_reuse_revokes_the_whole_family(client, world):
    account = await world.account(Role.coordinator)
    first = await login(client, account)
    second = (await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})).json()
    replay = await client.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    # the thief's replay ends the legitimate holder's session too
    assert (await client.get("/api/v1/auth/me", headers=bearer(second))).status_code == 401
    after = await client.post(REFRESH, json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401
    # other sessions of the same account are untouched
    assert (await login(client, account))["access_token"]


async def test_concurrent_refreshes_with_one_token_yield_one_winner(client, world):
    account = await world.account(Role.coordinator)
    first = await login(client, account)
    responses = await asyncio.gather(
        *[client.post(REFRESH, json={"refresh_token": first["refresh_token"]}) for _ in range(5)]
    )
    assert sorted(r.status_code for r in responses).count(200) == 1


async def test_refresh_body_is_strict(client):
    response = await client.post(REFRESH, json={"refresh_token": "x", "role": "admin"})
    assert response.status_code == 422
