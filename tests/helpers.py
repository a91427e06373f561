"""Shared test helpers: the CLI as an operator runs it, and an app on a database of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from referral import migrate
from referral.config import SECRET_FIELDS, Settings
from referral.main import create_app
from tests.databases import ScratchDatabase

ROOT = Path(__file__).resolve().parent.parent


def cli_env(settings: Settings, database_url: str, **overrides: str) -> dict[str, str]:
    """A production-mode environment with the test run's secrets and a chosen database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env.update(
        {f"REFERRAL_{n.upper()}": getattr(settings, n).get_secret_value() for n in SECRET_FIELDS}
    )
    env.update(REFERRAL_ENV="production", REFERRAL_DATABASE_URL=database_url)
    env.update(overrides)
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "referral.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


@asynccontextmanager
async def scratch_app(settings: Settings, tmp_path: Path, label: str) -> AsyncIterator[tuple]:
    """A migrated database of its own and an app on it: (app, client, settings, database)."""
    database = await asyncio.to_thread(ScratchDatabase.create, tmp_path, label)
    try:
        await asyncio.to_thread(migrate.upgrade, database.url)
        own = settings.model_copy(update={"database_url": database.url})
        app = create_app(own)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield app, client, own, database
        finally:
            await app.state.engine.dispose()
    finally:
        await asyncio.to_thread(database.drop)
