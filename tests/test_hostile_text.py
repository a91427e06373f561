"""Hostile text in any parameter is a 4xx problem or an ordinary answer, never a 5xx.

Every path and query parameter of every operation in the published schema gets each value
below, as a coordinator and as an administrator (between them they reach every route).
The schema fuzzer (test_fuzz.py) draws a dozen fixed examples per operation and did not
find the NUL that was a 500 on PostgreSQL; this walks every parameter with the values an
attacker tries first. Every string in a referral's body gets a lone surrogate, which no
database can store as text.
"""

from __future__ import annotations

import json
import uuid

from referral.models.enums import Role
from tests.case_world import make_town, new_case, referral_body
from tests.conftest import bearer, login
from tests.test_http import assert_problem

HOSTILE = {
    "nul": "a%00b",
    "invalid UTF-8": "%FF%FE",
    "a lone surrogate, as UTF-8": "%ED%A0%80",
    "an overlong slash": "%C0%AF",
    "a right-to-left override": "%E2%80%AE",
    "a path escape": "..%2F..%2Fetc%2Fpasswd",
    "SQL": "%27%20OR%201%3D1--",
    "a number too large": "99999999999999999999999",
    "5,000 characters": "x" * 5_000,
    "nothing": "",
}
WRITES = {"post", "put", "patch"}


def _requests(schema: dict, case_id: str):
    """(method, url, what) for every path or query parameter and every hostile value; the
    other path parameters name a real case."""
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            for target in parameters:
                if target["in"] not in ("path", "query"):
                    continue
                for what, value in HOSTILE.items():
                    url = path
                    for parameter in parameters:
                        if parameter["in"] == "path":
                            given = value if parameter is target else case_id
                            url = url.replace("{" + parameter["name"] + "}", given)
                    if target["in"] == "query":
                        url += f"?{target['name']}={value}"
                    yield method, url, f"{what} in {target['name']}"


def _is_answer(response) -> bool:
    if response.status_code >= 500:
        return False
    media_type = response.headers.get("content-type", "")
    return response.status_code < 400 or media_type.startswith("application/problem+json")


async def test_hostile_text_in_any_parameter_is_never_a_server_error(app, client, world):
    town = await make_town(client, world)
    case_id = await new_case(client, town.referrer)
    administrator = bearer(await login(client, await world.account(Role.admin)))
    wrong = []
    sent = 0
    for method, url, what in _requests(app.openapi(), case_id):
        for headers in (town.coordinator.headers, administrator):
            extra = {"If-Match": '"1"', "Idempotency-Key": uuid.uuid4().hex}
            body = {} if method in WRITES else None
            response = await client.request(
                method.upper(), url, headers={**headers, **extra}, json=body
            )
            sent += 1
            if not _is_answer(response):
                wrong.append(f"{method.upper()} {url[:60]} ({what}): {response.status_code}")
    assert sent > 500  # every operation was reached
    assert wrong == []


def _strings(value, at=()):
    """Where the strings of a JSON document are, as paths of keys and indexes."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*at, index))
    elif isinstance(value, str):
        yield at


async def test_a_lone_surrogate_in_any_string_of_a_referral_is_422_and_changes_nothing(
    client, world
):
    town = await make_town(client, world)
    headers = {**town.referrer.headers, "Content-Type": "application/json"}
    before = (await client.get("/api/v1/cases", headers=town.referrer.headers)).json()
    valid = referral_body()
    places = list(_strings(valid))
    assert len(places) > 10
    for place in places:
        body = json.loads(json.dumps(valid))
        holder = body
        for key in place[:-1]:
            holder = holder[key]
        holder[place[-1]] = "before\ud800after"
        raw = json.dumps(body)  # ensure_ascii writes the surrogate as the escape \ud800
        key = {"Idempotency-Key": uuid.uuid4().hex}
        response = await client.post("/api/v1/referrals", content=raw, headers={**headers, **key})
        assert_problem(response, 422)
    after = (await client.get("/api/v1/cases", headers=town.referrer.headers)).json()
    assert after == before
