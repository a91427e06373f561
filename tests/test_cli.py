"""The `referral` command: create-admin (no default accounts), demo seed, secrets."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest
from sqlmodel import func, select

from referral.config import SECRET_FIELDS, Environment, Settings
from referral.demo.seed import MUNICIPALITIES, DemoRefused, seed_demo
from referral.models import AuditEvent, CaseFile, Municipality, Organisation, User
from referral.models.enums import Agency, Role
from tests.case_world import HAPPY_PATH
from tests.conftest import enrol
from tests.helpers import cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return run_cli({**os.environ, **env}, *args, stdin=stdin)


def _env(settings: Settings, url: str) -> dict[str, str]:
    # the suite's secrets: an event the command writes joins the chain under the suite's key
    return cli_env(settings, url)


async def test_create_admin_from_stdin_then_sign_in(client, app, settings, test_db):
    env = _env(settings, test_db.url)
    username = f"first.admin.{secrets.token_hex(3)}"
    result = await asyncio.to_thread(
        _cli,
        ["create-admin", "--username", username, "--password-stdin"],
        env,
        "an administrator passphrase\n",
    )
    assert result.returncode == 0, result.stderr
    response = await client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": "an administrator passphrase"},
    )
    assert response.status_code == 403  # the first sign-in enrols the second factor
    _, enrolled = await enrol(client, response.json()["enrolment_token"])
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {enrolled['access_token']}"}
    )
    assert me.json()["role"] == "admin"
    assert me.json()["municipality_id"] is None
    async with app.state.sessionmaker() as s:  # an admin action like any other: audited
        account = (await s.exec(select(User).where(User.username == username))).one()
        made = (
            await s.exec(select(AuditEvent).where(AuditEvent.action == "admin.user.create"))
        ).all()
    [event] = [e for e in made if e.resource_ids == [str(account.id)]]
    assert (event.purpose, event.fields) == ("cli", ["display_name", "username"])

    again = await asyncio.to_thread(
        _cli,
        ["create-admin", "--username", username, "--password-stdin"],
        env,
        "an administrator passphrase\n",
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr


async def test_create_admin_refuses_a_short_password(settings, test_db):
    result = await asyncio.to_thread(
        _cli,
        ["create-admin", "--username", "short.pw.admin", "--password-stdin"],
        _env(settings, test_db.url),
        "tooshort\n",
    )
    assert result.returncode == 2
    assert "at least 12" in result.stderr


async def test_serve_refuses_to_start_with_an_example_secret(settings, test_db):
    env = {**_env(settings, test_db.url), "REFERRAL_JWT_SECRET": "change-me"}
    result = await asyncio.to_thread(_cli, ["serve"], env)
    assert result.returncode != 0
    assert "REFERRAL_JWT_SECRET is an example value" in result.stderr


def test_secrets_command_prints_strong_secrets():
    result = _cli(["secrets"], {})
    assert result.returncode == 0
    printed = dict(line.split("=", 1) for line in result.stdout.strip().splitlines())
    assert set(printed) == {f"REFERRAL_{name.upper()}" for name in SECRET_FIELDS}
    settings = Settings(
        env=Environment.production,
        **{name: printed[f"REFERRAL_{name.upper()}"] for name in SECRET_FIELDS},
    )
    assert settings.key_ring.current == 1


async def test_demo_seed_refused_outside_development(settings):
    with pytest.raises(DemoRefused):
        await seed_demo(settings)


async def test_demo_seed_creates_the_directory_once(settings, tmp_path):
    from referral import migrate
    from referral.db import create_engine, create_sessionmaker
    from tests.databases import ScratchDatabase

    database = await asyncio.to_thread(ScratchDatabase.create, tmp_path, "demo")
    try:
        await asyncio.to_thread(migrate.upgrade, database.url)
        dev = settings.model_copy(
            update={
                "env": Environment.development,
                "database_url": database.url,
                "var_dir": tmp_path / "var",
            }
        )
        text = await seed_demo(dev)
        logins = tmp_path / "var" / "demo-logins.txt"
        assert stat.S_IMODE(logins.stat().st_mode) == 0o600
        assert logins.read_text() == text
        assert await seed_demo(dev) == text  # second run reuses what exists

        engine = create_engine(dev)
        async with create_sessionmaker(engine)() as s:
            count = (await s.exec(select(func.count()).select_from(Municipality))).one()
            regions = set((await s.exec(select(Municipality.region))).all())
            users = (await s.exec(select(User, Organisation).join(Organisation))).all()
            states = dict(
                (await s.exec(select(CaseFile.state, func.count()).group_by(CaseFile.state))).all()
            )
        await engine.dispose()
        assert count == 38 == sum(len(v) for v in MUNICIPALITIES.values())
        assert set(states) == set(HAPPY_PATH)  # demo cases in every state
        assert 200 <= sum(states.values()) <= 1000
        assert regions == set(MUNICIPALITIES)
        assert {u.role for u, _ in users} == {r.value for r in Role}
        municipalities = {u.municipality_id for u, _ in users if u.municipality_id}
        assert len(municipalities) == 2
        for municipality_id in municipalities:
            panel = {
                o.agency
                for u, o in users
                if u.role == "panel_member" and u.municipality_id == municipality_id
            }
            assert panel == {a.value for a in Agency}
        for username, role, password, secret in (line.split() for line in text.splitlines()[3:]):
            assert username in {u.username for u, _ in users}
            assert len(password) >= 12
            assert (secret != "-") == (role in ("coordinator", "panel_member", "auditor", "admin"))
    finally:
        await asyncio.to_thread(database.drop)
