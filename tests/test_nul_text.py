"""Text holding U+0000 (NUL) is refused with 400 wherever it comes in, and changes nothing.

PostgreSQL cannot store NUL in text: a sign-in form or a list filter holding one failed
with a 500 there (found by a longer schemathesis run), while SQLite accepted it and stored
it inside a name.
"""

from __future__ import annotations

import json

import pytest

from referral.middleware import _holds_nul
from tests.case_world import make_town, new_case, referral_body
from tests.test_http import assert_problem


@pytest.fixture
async def town(client, world):
    return await make_town(client, world)


def assert_nul_refused(response) -> None:
    assert "U+0000" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(
    ("raw", "is_json", "holds"),
    [
        (b'{"a": "x\\u0000y"}', True, True),
        (b'{"a": "x\\\\u0000y"}', True, False),  # a backslash, then the text u0000
        (b'{"a": "x\\\\\\u0000y"}', True, True),  # a backslash, then NUL
        (b'{"a": "50%00"}', True, False),  # percent signs are text in JSON
        (b'{"a": "x\x00y"}', True, True),
        (b"username=a%00b", False, True),
        (b"username=a%2500b", False, False),  # the text %00
        (b"state=submitted", False, False),
    ],
)
def test_what_counts_as_a_nul(raw, is_json, holds):
    assert _holds_nul(raw, is_json) is holds


async def test_a_sign_in_form_holding_nul_is_400(client, town):
    form = {"username": "coordinator\x00", "password": "not the password at all"}
    assert_nul_refused(await client.post("/api/v1/auth/token", data=form))
    raw = (
        b"--b\r\nContent-Disposition: form-data; name=username\r\n\r\nme\x00\r\n"
        b"--b\r\nContent-Disposition: form-data; name=password\r\n\r\nlong enough pw\r\n--b--\r\n"
    )
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    assert_nul_refused(await client.post("/api/v1/auth/token", content=raw, headers=multipart))


async def test_a_query_or_path_holding_nul_is_400(client, town):
    headers = town.coordinator.headers
    assert_nul_refused(await client.get("/api/v1/cases?state=sub%00mitted", headers=headers))
    assert_nul_refused(await client.get("/api/v1/stats/ref%00errals", headers=headers))
    listed = await client.get("/api/v1/cases?state=submitted", headers=headers)
    assert listed.status_code == 200


async def test_a_json_body_holding_nul_is_400_and_changes_nothing(client, town):
    referrer, coordinator = town.referrer, town.coordinator
    before = (await client.get("/api/v1/cases", headers=referrer.headers)).json()["items"]
    body = json.dumps(referral_body(given="Te\x00sta"))
    assert "\\u0000" in body
    headers = {**referrer.headers, "Content-Type": "application/json", "Idempotency-Key": "nul-1"}
    refused = await client.post("/api/v1/referrals", content=body, headers=headers)
    assert_nul_refused(refused)
    del headers["Content-Type"]  # FastAPI reads a body that names no media type as JSON
    untyped = await client.post("/api/v1/referrals", content=body, headers=headers)
    assert_nul_refused(untyped)
    after = (await client.get("/api/v1/cases", headers=referrer.headers)).json()["items"]
    assert after == before

    case_id = await new_case(client, referrer)
    notes = f"/api/v1/cases/{case_id}/notes"
    note = {"section": "general", "body": "Before\x00after"}
    assert_nul_refused(await client.post(notes, json=note, headers=coordinator.headers))
    assert (await client.get(notes, headers=coordinator.headers)).json() == []


async def test_the_text_backslash_u0000_is_kept_as_written(client, town):
    case_id = await new_case(client, town.referrer, referral_body(given="Te\\u0000sta"))
    read = await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
    assert read.json()["subject"]["given_name"] == "Te\\u0000sta"
