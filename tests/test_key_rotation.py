"""Key rotation: after rotating and removing the old key everything decrypts; a ciphertext
copied elsewhere does not; an interrupted rotation resumes."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import select

from referral.config import generate_secret
from referral.crypto import CryptoError, generate_key_entry, open_field
from referral.main import create_app
from referral.models import AuditEvent, CaseFile
from referral.retention.keys import SEALED_MODELS, rotate, sealed_columns
from tests.case_world import make_town, new_case, referral_body, screen_and_assess
from tests.conftest import World
from tests.helpers import cli_env, run_cli, scratch_app


@pytest.fixture
async def sealed(settings, tmp_path):
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
            app.state.audit_keys,
            batch=1,
            progress=stop_after_first_batch,
        )
    assert await _versions(app) == {"v1", "v3"}  # part way
    await rotate(app.state.sessionmaker, ring, app.state.audit_keys, batch=1)
    assert await _versions(app) == {"v3"}


# --- the blind index ------------------------------------------------------------------------


@asynccontextmanager
async def _deployed(settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client
    finally:
        await app.state.verifier.finished()
        await app.state.sealer.finished()
        await app.state.engine.dispose()


async def test_a_new_blind_index_key_keeps_finding_the_same_person(settings, tmp_path):
    """The blind index moves to a new key without losing a person: while both keys are
    deployed a re-referral still finds the earlier one (the statistics count one person),
    and the coordinator sees the earlier case as a possible re-referral; `keys reindex`
    moves every index, and then the new key alone finds them all."""
    person = {"given": "Rishfaqur", "family": "Provëllari", "born": date(2009, 3, 2)}
    async with scratch_app(settings, tmp_path, "reindex") as (app, client, own, database):
        town = await make_town(client, World(app))
        first = await new_case(client, town.referrer, referral_body(**person))
        other = await new_case(client, town.referrer, referral_body(given="Tjetri"))
        old_key, new_key = own.blind_index_key, SecretStr(generate_secret("blind_index_key"))

        both = {"blind_index_key": new_key, "blind_index_key_previous": old_key}
        async with _deployed(own.model_copy(update=both)) as moving:
            second = await new_case(moving, town.referrer, referral_body(**person))
            # the indexes are under different keys until the reindex; the coordinator still
            # sees each case as a possible re-referral of the other
            assert await _hints(moving, town, second) == {first}
            assert await _hints(moving, town, first) == {second}
            assert await _hints(moving, town, other) == set()

        env = cli_env(
            own,
            database.url,
            REFERRAL_BLIND_INDEX_KEY=new_key.get_secret_value(),
            REFERRAL_BLIND_INDEX_KEY_PREVIOUS=old_key.get_secret_value(),
        )
        moved = await asyncio.to_thread(run_cli, env, "keys", "reindex")
        assert moved.returncode == 0, moved.stderr
        assert "3 case(s) checked, 2 re-indexed" in moved.stdout
        assert "re-indexing" in moved.stderr  # the progress bar
        again = await asyncio.to_thread(run_cli, env, "keys", "reindex", "--batch", "1")
        assert "3 case(s) checked, 0 re-indexed" in again.stdout

        async with _deployed(own.model_copy(update={"blind_index_key": new_key})) as renewed:
            assert await _hints(renewed, town, second) == {first}
            assert await _hints(renewed, town, first) == {second}
            third = await new_case(renewed, town.referrer, referral_body(**person))
            assert await _hints(renewed, town, third) == {first, second}

        async with app.state.sessionmaker() as s:
            people = dict((await s.exec(select(CaseFile.id, CaseFile.stat_person))).all())
            reindexed = (
                await s.exec(select(AuditEvent).where(AuditEvent.action == "keys.reindex"))
            ).all()
        same = {people[uuid.UUID(c)] for c in (first, second, third)}
        assert len(same) == 1  # one person in the statistics, under either key
        assert people[uuid.UUID(other)] not in same
        assert {i for e in reindexed for i in e.resource_ids} == {first, other}
        assert all(e.fields == ["blind_index"] for e in reindexed)


async def _hints(client: httpx.AsyncClient, town, case_id: str) -> set[str]:
    seen = await client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
    assert seen.status_code == 200, seen.text
    return {hint["case_id"] for hint in seen.json()["possible_rereferrals"]}
