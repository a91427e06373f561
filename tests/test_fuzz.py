"""Fuzzing: schemathesis against the OpenAPI schema, as every role, on the served app.

Generated requests, valid and invalid, go to `referral serve` (uvicorn, as in production)
with each role's token. Whatever arrives, the answer is never a 5xx and always matches the
schema: the documented status, media type and body shape.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from referral.config import Environment, Settings, generate_secret
from referral.main import create_app
from referral.models.enums import Role
from tests.conftest import World, bearer, login
from tests.helpers import cli_env
from tests.server import serving

# Signing out would end the role's session and turn the rest of its run into 401s.
NOT_FUZZED = ("/api/v1/auth/logout",)
# The suite runs a small, fixed set of examples, the same on every run, so that a red CI
# names a change and not a dice roll. `make fuzz` runs a longer campaign with fresh
# examples each time (REFERRAL_FUZZ_EXAMPLES); hypothesis prints the seed of a failure.
CAMPAIGN = os.environ.get("REFERRAL_FUZZ_EXAMPLES")
EXAMPLES_PER_OPERATION = int(CAMPAIGN) if CAMPAIGN else 12


def _openapi() -> dict:
    """The schema the app publishes (in production the docs are off, so read it here)."""
    secrets = {
        name: generate_secret(name)
        for name in ("jwt_secret", "data_keys", "blind_index_key", "audit_key")
    }
    app = create_app(
        Settings(env=Environment.test, database_url="sqlite+aiosqlite:///:memory:", **secrets)
    )
    return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi()).exclude(path=NOT_FUZZED)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
async def fuzz_target(app, settings, test_db, tmp_path_factory):
    """The served app on the test database, and a signed-in account of every role."""
    world = World(app)
    town = await world.municipality()
    transport = httpx.ASGITransport(app=app)
    headers_by_role = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for role in Role:
            account = await world.account(role, municipality=town)
            headers_by_role[role] = bearer(await login(client, account))
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    with serving(cli_env(settings, test_db.url), log) as server:
        yield server.base_url, headers_by_role


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=not CAMPAIGN,
)
def test_no_5xx_and_every_answer_matches_the_schema(case, fuzz_target):
    base_url, headers_by_role = fuzz_target
    for role in Role:
        case.call_and_validate(
            base_url=base_url, headers=headers_by_role[role], checks=CHECKS, timeout=30
        )
