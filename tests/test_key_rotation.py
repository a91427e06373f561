"""Key rotation: after rotating and removing the old key everything decrypts; a ciphertext
copied elsewhere does not; an interrupted rotation resumes."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import select

from referral.crypto import CryptoError, generate_key_entry, open_field
from referral.main import create_app
from referral.models import CaseFile
from referral.retention.keys import SEALED_MODELS, rotate, sealed_columns
from tests.case_world import new_case, referral_body, screen_and_assess
from tests.conftest import World
from tests.helpers import cli_env, run_cli, scratch_app


@pytest.fixture
async def sealed(settings, tmp_path):
    from tests.case_world import make_town

    async with scratch_app(settings, tmp_path, "keys") as (app, client, own, _):
        town = await make_town(client, World(app))
        cases = []
        for name in ("Rrotullueshme", "Tjetra"):
            case_id = await new_case(client, town.referrer, referral_body(given=name))
            await client.post(
                f"/api/v1/cases/{case_id}/notes",
                headers=town.coordinator.headers,
                json={"section": "general", "body": f"Note on {name}"},
            )
            await screen_and_assess(
                client,
                app,
                town.coordinator,
                case_id,
                "Screened",
                {
                    "factors": [{"dimension": "intent", "factor": "a_b", "score": 1}],
                    "summary": "Low",
                },
            )
            cases.append(case_id)
        yield app, own, town, cases


async def _versions(app) -> set[str]:
    found = set()
    async with app.state.sessionmaker() as s:
        for model in SEALED_MODELS:
            for row in (await s.exec(select(model))).all():
                for name in sealed_columns(model):
                    token = getattr(row, name)
                    if token:
                        found.add(token.split(".", 1)[0])
    return found


def _cli(settings, data_keys: str, *args) -> subprocess.CompletedProcess:
    return run_cli(cli_env(settings, settings.database_url, REFERRAL_DATA_KEYS=data_keys), *args)


async def test_rotate_then_remove_the_old_key(sealed):
    app, settings, town, cases = sealed
    old = settings.data_keys.get_secret_value()
    new = generate_key_entry(2)
    assert await _versions(app) == {"v1"}
    result = await asyncio.to_thread(_cli, settings, f"{old},{new}", "keys", "rotate")
    assert result.returncode == 0, result.stderr
    assert "re-encrypting" in result.stderr  # the progress bar
    assert await _versions(app) == {"v2"}

    only_new = create_app(settings.model_copy(update={"data_keys": SecretStr(new)}))
    transport = httpx.ASGITransport(app=only_new)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for case_id, name in zip(cases, ("Rrotullueshme", "Tjetra"), strict=True):
                seen = await client.get(
                    f"/api/v1/cases/{case_id}", headers=town.coordinator.headers
                )
                assert seen.status_code == 200, seen.text
                body = seen.json()
                assert body["subject"]["given_name"] == name
                assert body["sections"]["general"]["notes"][0]["body"] == f"Note on {name}"
                assert body["screening"]["summary"] == "Screened"
                assert body["sections"]["general"]["assessments"][0]["summary"] == "Low"
    finally:
        await only_new.state.engine.dispose()


async def test_a_ciphertext_copied_to_another_row_or_column_does_not_decrypt(sealed):
    app, _, _, cases = sealed
    ring = app.state.case_keys.ring
    first, second = (uuid.UUID(c) for c in cases)
    async with app.state.sessionmaker() as s, s.begin():
        source = (await s.exec(select(CaseFile).where(CaseFile.id == first))).one()
        await s.exec(
            update(CaseFile)
            .where(CaseFile.id == second)
            .values(given_name_enc=source.given_name_enc)
        )
        await s.exec(
            update(CaseFile)
            .where(CaseFile.id == first)
            .values(family_name_enc=source.given_name_enc)
        )
    async with app.state.sessionmaker() as s:
        rows = {r.id: r for r in (await s.exec(select(CaseFile))).all()}
    assert open_field(ring, rows[first], "given_name") == "Rrotullueshme"
    with pytest.raises(CryptoError):
        open_field(ring, rows[second], "given_name")  # another row
    with pytest.raises(CryptoError):
        open_field(ring, rows[first], "family_name")  # another column


async def test_an_interrupted_rotation_resumes(sealed):
    app, settings, _, _ = sealed
    from referral.crypto import KeyRing

    ring = KeyRing.parse(f"{settings.data_keys.get_secret_value()},{generate_key_entry(3)}")

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(_: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await rotate(
            app.state.sessionmaker,
            ring,
            app.state.audit_key,
            batch=1,
            progress=stop_after_first_batch,
        )
    assert await _versions(app) == {"v1", "v3"}  # part way
    await rotate(app.state.sessionmaker, ring, app.state.audit_key, batch=1)
    assert await _versions(app) == {"v3"}
