"""Shared test helpers: the CLI as an operator runs it, and an app on a database of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import event, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col, select

from referral import migrate
from referral.audit import chain
from referral.audit.sealer import SEALER_OPTION
from referral.config import SECRET_FIELDS, Settings
from referral.main import create_app
from referral.models import CaseFile
from referral.models.base import utcnow
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
            await app.state.verifier.finished()
            await app.state.sealer.finished()
            await app.state.engine.dispose()
    finally:
        await asyncio.to_thread(database.drop)


async def tamper(database: ScratchDatabase, table: str, *statements: str) -> None:
    """Someone with direct access to the database: `table`'s triggers off, then the edits."""
    engine = create_async_engine(database.url)
    try:
        async with engine.begin() as connection:
            if database.is_postgres:
                await connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                triggers = await connection.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                    {"t": table},
                )
                for (trigger,) in triggers.all():
                    await connection.execute(text(f"DROP TRIGGER {trigger}"))
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def counting(app, rounds: list[str] | None = None) -> Iterator[list[str]]:
    """The SQL statements requests send; with `rounds`, the sealer's go there (ADR 0014)."""
    statements: list[str] = []

    def record(_conn, _cursor, statement, _parameters, context, _many) -> None:
        if context.execution_options.get(SEALER_OPTION):
            if rounds is not None:
                rounds.append(statement)
        else:
            statements.append(statement)

    def record_lean(statement, _arguments) -> None:
        statements.append(statement)

    # the lean answers send their one statement on the driver (ADR 0028, 0029)
    lean = app.state.lean_statements
    observers = lean.observers if lean is not None else []
    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    observers.append(record_lean)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
        observers.remove(record_lean)


def synthetic_event(**values):
    """A pending audit event: an anonymous allowed test action, with `values` instead."""
    defaults = dict(
        actor_user_id=None,
        actor_role=None,
        actor_organisation_id=None,
        actor_municipality_id=None,
        action="test.event",
        resource_type=None,
        resource_ids=[],
        outcome="allowed",
        status_code=None,
        request_id=None,
        client_address=None,
        purpose=None,
        fields=[],
    )
    return chain.pending_event(**(defaults | values))


def unusual_events() -> list:
    """Audit events PostgreSQL renders differently from their canonical form: non-ASCII
    text, DEL, a timestamp on a whole second."""
    events = []
    for purpose, at in (
        ("Überprüfung", utcnow()),
        ("del\x7f", utcnow()),
        ("whole-second", datetime(2026, 1, 1, tzinfo=UTC)),
    ):
        event = synthetic_event(action="test.unusual", resource_ids=["a"], purpose=purpose)
        event.occurred_at = at
        events.append(event)
    return events


async def until_waiting_on_a_lock(connection: asyncpg.Connection, database: str) -> None:
    """Return once another session on `database` waits for a lock (PostgreSQL)."""
    for _ in range(100):
        # in a transaction, PostgreSQL answers from the activity it saw first, unless told
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            database,
        )
        if waiting:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the request never came to wait for a lock")


async def ended_job(client: httpx.AsyncClient, headers: dict, url: str) -> dict:
    """The job at `url` (a walk, a build) once it has ended, as its user polling it sees it."""
    for _ in range(1200):
        answer = await client.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] != "running":
            return answer.json()
        await asyncio.sleep(0.05)
    pytest.fail(f"the job did not end: {answer.json()}")


BUILDS_URL = "/api/v1/stats/snapshot-builds"


async def built(client: httpx.AsyncClient, headers: dict, **params: str) -> dict:
    """Ask for a snapshot build, as the national analyst does, and wait for its end. A build
    as of another date that another test left running is waited out first (409)."""
    for _ in range(600):
        asked = await client.post(BUILDS_URL, headers=headers, params=params)
        if asked.status_code != 409:
            break
        await asyncio.sleep(0.1)
    assert asked.status_code == 202, asked.text
    assert asked.headers["location"] == f"{BUILDS_URL}/{asked.json()['id']}"
    return await ended_job(client, headers, asked.headers["location"])


async def audit_events(app, **where) -> list:
    """The trail's events whose columns have the values given, in order."""
    from referral.models import AuditEvent

    statement = select(AuditEvent).order_by(AuditEvent.seq)
    for column, value in where.items():
        statement = statement.where(getattr(AuditEvent, column) == value)
    async with app.state.sessionmaker() as session:
        return list((await session.exec(statement)).all())


async def another_worker_finishes(app, walk_id) -> None:
    """A walk that a test made as another worker's ends, so the suite's later walks can run."""
    from referral.models import AuditVerification

    async with app.state.sessionmaker() as session, session.begin():
        await session.exec(
            update(AuditVerification)
            .where(col(AuditVerification.id) == walk_id)
            .values(status="failed", finished_at=utcnow())
        )


def event_facts(event) -> tuple:
    """What an audit event says, less its time, place in the chain and request: what two
    paths answering the same request must both record."""
    return (
        event.action,
        event.outcome,
        event.status_code,
        event.actor_user_id,
        event.actor_role,
        event.actor_organisation_id,
        event.actor_municipality_id,
        event.resource_type,
        list(event.resource_ids),
        sorted(event.fields),
        event.purpose,
        event.client_address,
    )


@asynccontextmanager
async def refusing_events_of(app, action: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the app's 500s as answers, while PostgreSQL refuses to stage or
    chain any audit event of `action` (a CHECK constraint on both tables, dropped after)."""
    constraint = f"test_refuses_{action.replace('.', '_')}"
    tables = ("audit_staged", "audit_event")
    async with app.state.engine.begin() as connection:
        for table in tables:
            await connection.execute(
                text(
                    f"ALTER TABLE {table} ADD CONSTRAINT {constraint} "
                    f"CHECK (action <> '{action}') NOT VALID"
                )
            )
    try:
        async with _answering_500s(app) as failing:
            yield failing
    finally:
        async with app.state.engine.begin() as connection:
            for table in tables:
                await connection.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}"))


@asynccontextmanager
async def garbled_name_of(app, case_id: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the app's 500s as answers, once the case's given name no longer
    decrypts (a ciphertext of the right form under no key's tag)."""
    async with app.state.sessionmaker() as session, session.begin():
        await session.exec(
            update(CaseFile)
            .where(col(CaseFile.id) == uuid.UUID(case_id))
            .values(given_name_enc="v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        )
    async with _answering_500s(app) as failing:
        yield failing


@asynccontextmanager
async def _answering_500s(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def observed_get(app, client: httpx.AsyncClient, url: str, headers: dict, **kwargs):
    """A GET as the user sends it, with what it cost and left: the answer, the statements
    sent for it (`counting`), and the audit events of its request, once they are chained."""
    return await observed(app, client, "GET", url, headers, **kwargs)


async def observed(app, client: httpx.AsyncClient, method: str, url: str, headers: dict, **kwargs):
    """`observed_get` for any method."""
    request_id = uuid.uuid4().hex
    with counting(app) as statements:
        response = await client.request(
            method, url, headers={**headers, "X-Request-ID": request_id}, **kwargs
        )
    await app.state.sealer.sealed()
    return response, statements, await audit_events(app, request_id=request_id)


async def assert_trail_whole(app) -> None:
    """The trail verifies from its first event, and nothing is left staged, unchained."""
    async with app.state.sessionmaker() as session:
        result = await chain.verify(session, app.state.audit_keys)
        staged = (await session.exec(text("SELECT count(*) FROM audit_staged"))).one()[0]
    assert result.ok, result
    assert staged == 0
