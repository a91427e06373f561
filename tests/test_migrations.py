"""The schema comes only from Alembic: up, down, up again, and no drift from the models."""

from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from referral import migrate
from referral.models import metadata
from tests.databases import ScratchDatabase


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _drift(url: str) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(tmp_path):
    database = await asyncio.to_thread(ScratchDatabase.create, tmp_path, "roundtrip")
    try:
        await asyncio.to_thread(migrate.upgrade, database.url)
        expected = set(metadata.tables) | {"alembic_version"}
        assert await _tables(database.url) == expected
        await asyncio.to_thread(migrate.downgrade, database.url, "base")
        assert await _tables(database.url) <= {"alembic_version"}
        await asyncio.to_thread(migrate.upgrade, database.url)
        assert await _tables(database.url) == expected
        assert await _drift(database.url) == []
    finally:
        await asyncio.to_thread(database.drop)


async def test_models_match_the_migrations(test_db):
    assert await _drift(test_db.url) == []


def test_single_head_and_date_slug_file_names():
    config = migrate.alembic_config("sqlite://")
    scripts = ScriptDirectory.from_config(config)
    assert len(scripts.get_heads()) == 1
    import re

    for revision in scripts.walk_revisions():
        name = revision.path.rsplit("/", 1)[-1]
        assert re.match(r"^\d{4}-\d{2}-\d{2}-\d{4}_[a-z0-9_]+\.py$", name), name


def test_metadata_uses_the_naming_convention():
    for table in metadata.tables.values():
        for constraint in table.constraints:
            assert constraint.name, f"unnamed constraint on {table.name}"
