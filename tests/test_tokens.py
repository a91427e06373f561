"""Every way a forged, stale or misused token could get in: each must be 401."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jose import jwt

from referral.auth import tokens as token_rules
from referral.auth.tokens import REQUIRED_CLAIMS
from referral.models.enums import Role
from tests.conftest import bearer, login

ME = "/api/v1/auth/me"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(settings, account, session_id, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(account.id),
        "sid": str(session_id),
        "jti": str(uuid.uuid4()),
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(settings, claims: dict, key: str | None = None) -> str:
    return jwt.encode(claims, key or settings.jwt_key, algorithm="HS256")


@pytest.fixture
async def session_of(client, world):
    """A real signed-in account, and the session id its genuine token names."""
    account = await world.account(Role.coordinator)
    tokens = await login(client, account)
    session_id = jwt.get_unverified_claims(tokens["access_token"])["sid"]
    return account, tokens, session_id


async def _assert_rejected(client, token: str) -> None:
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_genuine_token_is_accepted(client, session_of):
    account, tokens, _ = session_of
    response = await client.get(ME, headers=bearer(tokens))
    assert response.status_code == 200
    assert response.json()["username"] == account.username


async def test_hand_built_token_with_the_right_key_is_accepted(client, settings, session_of):
    # Proves the forgeries below fail for the reason each names, not for a wrong recipe.
    account, _, sid = session_of
    response = await client.get(
        ME, headers={"Authorization": f"Bearer {_sign(settings, _claims(settings, account, sid))}"}
    )
    assert response.status_code == 200


async def test_no_token_and_garbage(client):
    response = await client.get(ME)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    await _assert_rejected(client, "not.a.jwt")
    await _assert_rejected(client, "")


async def test_alg_none(client, settings, session_of):
    account, _, sid = session_of
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(settings, account, sid))}."
    await _assert_rejected(client, token)


async def test_payload_tampered(client, settings, session_of):
    account, tokens, sid = session_of
    header, _payload, signature = tokens["access_token"].split(".")
    other = await _other_admin_claims(settings, account, sid)
    await _assert_rejected(client, f"{header}.{_b64(other)}.{signature}")


async def _other_admin_claims(settings, account, sid) -> dict:
    return _claims(settings, account, sid, sub=str(uuid.uuid4()))


async def test_signed_with_another_key(client, settings, session_of):
    account, _, sid = session_of
    forged = _sign(settings, _claims(settings, account, sid), key="x" * 64)
    await _assert_rejected(client, forged)


async def test_other_algorithm_is_refused(client, settings, session_of):
    account, _, sid = session_of
    token = jwt.encode(_claims(settings, account, sid), settings.jwt_key, algorithm="HS512")
    await _assert_rejected(client, token)


async def test_an_es256_token_is_refused(client, settings, session_of):
    account, _, sid = session_of
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    await _assert_rejected(client, jwt.encode(_claims(settings, account, sid), pem, "ES256"))


# docs/security-findings.md accepts CVE-2024-23342 (a timing side channel in the `ecdsa`
# package's signing) because nothing here loads that package: python-jose requires it but
# uses `cryptography` for EC keys once that is installed, and this service signs with HS256
# only. A fresh interpreter shows it: the whole app, a token issued and verified, and an
# ES256 token refused, with `ecdsa` never imported.
NEVER_LOADS_ECDSA = """
import sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jose import jwt
from referral.auth import tokens
from referral.config import Environment, Settings, generate_secret
from referral.main import create_app
settings = Settings(
    env=Environment.test, database_url="sqlite+aiosqlite:///:memory:",
    **{name: generate_secret(name) for name in ("jwt_secret", "data_keys", "blind_index_key",
                                                "audit_key")},
)
create_app(settings)
ids = dict(subject=tokens.uuid7(), session_id=tokens.uuid7())
issued = tokens.issue(settings, token_type=tokens.ACCESS, **ids)
assert tokens.decode(settings, issued.token, expected_type=tokens.ACCESS).subject == ids["subject"]
key = ec.generate_private_key(ec.SECP256R1())
pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
forged = jwt.encode({"sub": "x"}, pem, algorithm="ES256")
try:
    tokens.decode(settings, forged, expected_type=tokens.ACCESS)
except tokens.InvalidToken:
    pass
else:
    raise AssertionError("ES256 accepted")
print(sorted(name for name in sys.modules if name.split(".")[0] == "ecdsa"))
"""


def test_the_ecdsa_package_is_never_loaded():
    result = subprocess.run(
        [sys.executable, "-c", NEVER_LOADS_ECDSA], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_expired(client, settings, session_of):
    account, _, sid = session_of
    now = int(time.time())
    claims = _claims(settings, account, sid, iat=now - 1000, nbf=now - 1000, exp=now - 10)
    await _assert_rejected(client, _sign(settings, claims))


async def test_not_yet_valid(client, settings, session_of):
    account, _, sid = session_of
    claims = _claims(settings, account, sid, nbf=int(time.time()) + 600)
    await _assert_rejected(client, _sign(settings, claims))


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_missing_claim(client, settings, session_of, claim):
    account, _, sid = session_of
    claims = _claims(settings, account, sid)
    del claims[claim]
    await _assert_rejected(client, _sign(settings, claims))


async def test_wrong_audience(client, settings, session_of):
    account, _, sid = session_of
    await _assert_rejected(client, _sign(settings, _claims(settings, account, sid, aud="other")))


async def test_wrong_issuer(client, settings, session_of):
    account, _, sid = session_of
    await _assert_rejected(client, _sign(settings, _claims(settings, account, sid, iss="evil")))


async def test_refresh_token_used_as_access_token(client, session_of):
    _, tokens, _ = session_of
    await _assert_rejected(client, tokens["refresh_token"])


async def test_access_token_used_as_refresh_token(client, session_of):
    _, tokens, _ = session_of
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}
    )
    assert response.status_code == 401


async def test_token_of_deactivated_user(client, signed_in, session_of):
    account, tokens, _ = session_of
    _, admin = await signed_in(Role.admin)
    user = await client.get(f"/api/v1/admin/users/{account.id}", headers=admin)
    response = await client.patch(
        f"/api/v1/admin/users/{account.id}",
        json={"is_active": False},
        headers={**admin, "If-Match": user.headers["etag"]},
    )
    assert response.status_code == 200, response.text
    await _assert_rejected(client, tokens["access_token"])
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_token_after_logout(client, session_of):
    _, tokens, _ = session_of
    response = await client.post("/api/v1/auth/logout", headers=bearer(tokens))
    assert response.status_code == 204
    await _assert_rejected(client, tokens["access_token"])
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_tokens_after_password_change(client, world):
    account = await world.account(Role.referrer)
    first = await login(client, account)
    second = await login(client, account)  # another device
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": account.password, "new_password": "a new and long passphrase"},
        headers=bearer(first),
    )
    assert response.status_code == 204, response.text
    for tokens in (first, second):
        await _assert_rejected(client, tokens["access_token"])
    account.password = "a new and long passphrase"
    assert (await login(client, account))["access_token"]


async def test_token_after_role_change(client, signed_in, session_of):
    account, tokens, _ = session_of
    _, admin = await signed_in(Role.admin)
    user = await client.get(f"/api/v1/admin/users/{account.id}", headers=admin)
    response = await client.patch(
        f"/api/v1/admin/users/{account.id}",
        json={"role": "analyst"},
        headers={**admin, "If-Match": user.headers["etag"]},
    )
    assert response.status_code == 200, response.text
    await _assert_rejected(client, tokens["access_token"])


# --- the worker's memory of verified access tokens (tokens.VerifiedTokens) ------------------


async def test_a_token_seen_before_is_refused_once_it_expires(client, settings, session_of):
    account, _, sid = session_of
    token = _sign(settings, _claims(settings, account, sid, exp=int(time.time()) + 2))
    accepted = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 200, accepted.text  # now remembered as verified
    await asyncio.sleep(3.1)
    await _assert_rejected(client, token)


def test_verified_tokens_remember_only_what_passed_and_only_so_many(settings, monkeypatch):
    ids = {"subject": uuid.uuid4(), "session_id": uuid.uuid4()}
    issued = [
        token_rules.issue(settings, **ids, token_type=token_rules.ACCESS).token for _ in range(3)
    ]
    refresh = token_rules.issue(settings, **ids, token_type=token_rules.REFRESH).token
    verified = token_rules.VerifiedTokens(settings, size=2)

    first = verified.decode(issued[0])
    with pytest.raises(token_rules.InvalidToken):
        verified.decode(refresh)  # another type never passes, so is never remembered
    tampered = issued[1][:-2] + ("AA" if not issued[1].endswith("AA") else "BB")
    with pytest.raises(token_rules.InvalidToken):
        verified.decode(tampered)

    calls = []
    real_decode = token_rules.decode
    monkeypatch.setattr(
        token_rules, "decode", lambda *a, **kw: calls.append(a[1]) or real_decode(*a, **kw)
    )
    assert verified.decode(issued[0]) == first
    assert calls == []  # remembered: not checked again
    verified.decode(issued[1])
    verified.decode(issued[2])  # the third pushes out the least recently used
    verified.decode(issued[0])
    assert calls == [issued[1], issued[2], issued[0]]
    with pytest.raises(token_rules.InvalidToken):
        verified.decode(tampered)
