"""Test databases: a fresh SQLite file, or a fresh PostgreSQL database created and dropped
around the run when REFERRAL_TEST_DATABASE_URL names a server. Built only by migrations."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

PG_ENV = "REFERRAL_TEST_DATABASE_URL"


def postgres_server_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def _asyncpg_url(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


async def server_execute(server_url: str, statement: str) -> None:
    import asyncpg

    parsed = make_url(server_url)
    connection = await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database=parsed.database or "postgres",
        timeout=10,
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class ScratchDatabase:
    """One fresh database. `url` is an async SQLAlchemy URL."""

    def __init__(self, url: str, server_url: str | None, name: str | None) -> None:
        self.url = url
        self.server_url = server_url
        self.name = name

    @property
    def is_postgres(self) -> bool:
        return self.server_url is not None

    @classmethod
    def create(cls, tmp_dir: Path, label: str = "main") -> ScratchDatabase:
        server = postgres_server_url()
        if server is None:
            path = tmp_dir / f"referral-{label}-{uuid.uuid4().hex[:8]}.db"
            return cls(f"sqlite+aiosqlite:///{path}", None, None)
        name = f"referral_test_{label}_{uuid.uuid4().hex[:12]}"
        asyncio.run(server_execute(server, f'CREATE DATABASE "{name}"'))
        url = make_url(_asyncpg_url(server)).set(database=name)
        return cls(url.render_as_string(hide_password=False), server, name)

    def drop(self) -> None:
        if self.server_url and self.name:
            statement = f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
            asyncio.run(server_execute(self.server_url, statement))
