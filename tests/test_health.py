from __future__ import annotations

import asyncio
import gc

import httpx

from referral import migrate
from referral.main import YOUNG_COLLECTION_AFTER, create_app
from tests.databases import ScratchDatabase


async def test_livez_and_readyz(client):
    assert (await client.get("/livez")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def _readyz(settings) -> httpx.Response:
    app = create_app(settings)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/readyz")
    finally:
        await app.state.engine.dispose()


async def test_readyz_is_503_when_migrations_are_behind(settings, tmp_path):
    database = await asyncio.to_thread(ScratchDatabase.create, tmp_path, "behind")
    try:
        response = await _readyz(settings.model_copy(update={"database_url": database.url}))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "migrated" in response.json()["detail"]
    finally:
        await asyncio.to_thread(database.drop)


async def test_readyz_is_503_when_the_database_is_unreachable(settings, tmp_path):
    if settings.is_sqlite:
        url = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/none.db"
    else:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    response = await _readyz(settings.model_copy(update={"database_url": url}))
    assert response.status_code == 503
    assert response.headers["retry-after"]


async def test_readyz_recovers_after_migration(settings, tmp_path):
    database = await asyncio.to_thread(ScratchDatabase.create, tmp_path, "later")
    try:
        patched = settings.model_copy(update={"database_url": database.url})
        assert (await _readyz(patched)).status_code == 503
        await asyncio.to_thread(migrate.upgrade, database.url)
        assert (await _readyz(patched)).status_code == 200
    finally:
        await asyncio.to_thread(database.drop)


async def test_a_starting_worker_freezes_its_start_up_heap_and_still_serves(settings):
    """A full collection must not rescan what start-up built (ADR 0016), and young
    collections come less often (ADR 0036); the heap and the thresholds are the process's
    own, so the test puts them back for the tests after it."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (YOUNG_COLLECTION_AFTER, *thresholds[1:])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                assert (await c.get("/readyz")).status_code == 200
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
