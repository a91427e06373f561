"""Resilience on PostgreSQL: an exhausted pool, a database restart under load, SIGTERM.

The served tests run `referral serve` (uvicorn, as in production) in a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from referral.audit import chain
from referral.auth import passwords
from referral.main import create_app
from referral.models import AuditEvent, CaseFile, IdempotencyRecord
from referral.models.enums import Agency, Role
from tests.case_world import referral_body
from tests.conftest import World, bearer, login
from tests.databases import server_execute
from tests.helpers import cli_env, run_cli, until_waiting_on_a_lock
from tests.proxy import DatabaseProxy
from tests.server import ServerProcess

pytestmark = pytest.mark.postgres_only


@dataclass
class Pair:
    referrer_id: uuid.UUID
    referrer: dict[str, str]
    coordinator: dict[str, str]


async def _pair(app) -> Pair:
    world = World(app)
    town = await world.municipality()
    referrer = await world.account(Role.referrer, municipality=town)
    coordinator = await world.account(
        Role.coordinator, agency=Agency.municipality, municipality=town
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return Pair(
            referrer.id,
            bearer(await login(client, referrer)),
            bearer(await login(client, coordinator)),
        )


def _is_problem_503(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers["content-type"] == "application/problem+json"
        and int(response.headers["retry-after"]) > 0
    )


# --- the pool ---------------------------------------------------------------------------------


async def test_exhausted_pool_answers_503_with_retry_after_within_two_seconds(settings):
    app = create_app(settings.model_copy(update={"database_pool_size": 2}))
    try:
        pair = await _pair(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = [await app.state.engine.connect() for _ in range(2)]
            try:
                started = time.monotonic()
                busy = await client.get("/api/v1/cases", headers=pair.coordinator)
                waited = time.monotonic() - started
                ready = await client.get("/readyz")
            finally:
                for connection in held:
                    await connection.close()
            assert _is_problem_503(busy), busy.text
            assert waited < 2.0
            assert ready.status_code == 503
            assert (await client.get("/api/v1/cases", headers=pair.coordinator)).status_code == 200
    finally:
        await app.state.engine.dispose()


async def test_sign_ins_queued_for_the_password_hasher_leave_the_pool_to_everyone_else(
    settings, monkeypatch
):
    """A burst of sign-ins (a panel morning, or someone spraying passwords) queues for the
    password hasher. A sign-in waiting there must hold no pooled connection, or the burst
    starves every other request of the database; one that waits too long is 503."""
    tuned = {"database_pool_size": 3, "password_hash_concurrency": 1}
    app = create_app(settings.model_copy(update=tuned | {"password_hash_wait_seconds": 1.0}))
    try:
        pair = await _pair(app)
        verify = passwords._verify

        def slow_verify(password: str, password_hash: str) -> bool:
            time.sleep(0.3)  # the hasher is the bottleneck: 10 sign-ins take 3 s in turn
            return verify(password, password_hash)

        monkeypatch.setattr(passwords, "_verify", slow_verify)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def sign_in(n: int) -> tuple[httpx.Response, float]:
                started = time.monotonic()
                form = {"username": f"nobody.{n}", "password": f"wrong-password-{n:04d}"}
                response = await client.post("/api/v1/auth/token", data=form)
                return response, time.monotonic() - started

            burst = [asyncio.create_task(sign_in(n)) for n in range(10)]
            await asyncio.sleep(0.15)  # every sign-in of the burst has arrived
            started = time.monotonic()
            listed = await client.get("/api/v1/cases", headers=pair.coordinator)
            waited = time.monotonic() - started
            answers = await asyncio.gather(*burst)

        assert listed.status_code == 200, listed.text
        assert waited < 0.5, waited
        statuses = Counter(response.status_code for response, _ in answers)
        assert set(statuses) == {401, 503}, statuses
        assert 2 <= statuses[401] <= 6, statuses  # those let through within the wait
        for response, seconds in answers:
            if response.status_code == 503:
                assert _is_problem_503(response), response.text
                assert seconds < 2.0, seconds
        # every sign-in is in the trail, the ones turned away too
        async with app.state.sessionmaker() as session:
            ids = [response.headers["x-request-id"] for response, _ in answers]
            recorded = (
                await session.exec(
                    select(AuditEvent.action, AuditEvent.outcome).where(
                        AuditEvent.request_id.in_(ids)
                    )
                )
            ).all()
        assert Counter(map(tuple, recorded)) == {
            ("auth.login", "denied"): statuses[401],
            ("auth.login", "error"): statuses[503],
        }
    finally:
        await app.state.engine.dispose()
        # the hasher's places are the process's, not the app's: give the suite its own back
        passwords.configure(settings.password_hash_concurrency, settings.password_hash_wait_seconds)


async def test_a_database_out_of_connections_is_503_not_a_fault(settings, test_db, signed_in):
    """PostgreSQL refuses a connection beyond max_connections, or beyond a role's or a
    database's limit, with SQLSTATE 53300: several workers' pools can add up to more than
    the server allows. That is the database being busy (503, try again), not a 500."""
    _, headers = await signed_in(Role.coordinator)
    role = f"referral_full_{uuid.uuid4().hex[:10]}"
    await server_execute(test_db.server_url, f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    url = make_url(settings.database_url).set(username=role, password=None)
    app = create_app(settings.model_copy(update={"database_url": url.render_as_string()}))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            me = await client.get("/api/v1/auth/me", headers=headers)
            form = {"username": "nobody.at.all", "password": "wrong-password-0000"}
            signing_in = await client.post("/api/v1/auth/token", data=form)
        for response in (me, signing_in):
            assert _is_problem_503(response), response.text
    finally:
        await app.state.engine.dispose()
        await server_execute(test_db.server_url, f'DROP ROLE IF EXISTS "{role}"')


async def test_a_stalled_database_is_503_in_bounded_time_and_then_recovers(settings, test_db):
    """A database that stops answering without closing its connections (a hung server, a
    firewall that dropped their state) must not hold requests until TCP gives up. Each
    statement has a deadline: past it the request is 503 and has changed nothing, and once
    the database answers again, so does the service."""
    url = make_url(test_db.url)
    proxy = DatabaseProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.up()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    # asyncpg cancels a statement past its deadline over a new connection, which stalls too
    deadline = {
        "database_url": proxied,
        "database_statement_timeout_seconds": 1.0,
        "database_connect_timeout_seconds": 1.0,
    }
    app = create_app(settings.model_copy(update=deadline))
    try:
        pair = await _pair(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            key, body = uuid.uuid4().hex, referral_body()

            async def intake() -> httpx.Response:
                headers = {**pair.referrer, "Idempotency-Key": key}
                return await client.post("/api/v1/referrals", json=body, headers=headers)

            # a case the coordinator has read once, and listed: its reads and lists now take
            # the lean paths, statements on the driver with the same deadline (ADR 0028, 0030)
            created = await client.post(
                "/api/v1/referrals",
                json=referral_body(),
                headers={**pair.referrer, "Idempotency-Key": uuid.uuid4().hex},
            )
            case_url = f"/api/v1/cases/{created.json()['id']}"
            assert (await client.get(case_url, headers=pair.coordinator)).status_code == 200

            assert (await client.get("/api/v1/cases", headers=pair.coordinator)).is_success
            lean_statements: list[str] = []
            app.state.lean_statements.observers.append(lambda sql, _: lean_statements.append(sql))
            proxy.stall()
            started = time.monotonic()
            all_three = asyncio.gather(
                client.get("/api/v1/cases", headers=pair.coordinator),
                intake(),
                client.get(case_url, headers=pair.coordinator),
            )
            stalled = await asyncio.wait_for(all_three, timeout=15)  # without a deadline: forever
            waited = time.monotonic() - started
            proxy.resume()
            stalled_lean, lean_statements[:] = list(lean_statements), []
            listed = await client.get("/api/v1/cases", headers=pair.coordinator)
            retried = await intake()
            read = await client.get(case_url, headers=pair.coordinator)

        for response in stalled:
            assert _is_problem_503(response), response.text
        assert waited < 6.0, waited
        assert listed.status_code == 200, listed.text
        assert read.status_code == 200, read.text
        # the stalled list and read were each one statement on the driver, given up at its
        # deadline; once the database answers, the list and the read are one statement each
        assert len(stalled_lean) == 2, stalled_lean
        assert len(lean_statements) == 2, lean_statements
        # the stalled intake wrote nothing: its key submits anew rather than replaying
        assert retried.status_code == 201, retried.text
    finally:
        proxy.resume()
        await app.state.engine.dispose()
        await proxy.down()


async def test_a_cli_command_outlasts_the_deadline_of_a_request(settings, test_db):
    """The statement deadline is the serving app's. A batch command that waits on the
    database longer than a request may (at national scale one statement of a snapshot, a
    retention run or a verification does) finishes its work rather than failing part way."""
    url = make_url(test_db.url)
    env = cli_env(settings, test_db.url, REFERRAL_DATABASE_STATEMENT_TIMEOUT_SECONDS="0.5")
    blocker = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE")
        command = asyncio.ensure_future(asyncio.to_thread(run_cli, env, "audit", "checkpoint"))
        await until_waiting_on_a_lock(blocker, url.database)
        await asyncio.sleep(1.5)  # three of the deadlines
        await transaction.rollback()
        finished = await asyncio.wait_for(command, timeout=120)
    finally:
        await blocker.close()
    assert finished.returncode == 0, finished.stderr
    assert set(json.loads(finished.stdout)) == {"seq", "hash"}


# --- a database restart under load ---------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    key: str
    status: int
    at: float
    seconds: float
    body: dict | None = None


async def _load(base_url: str, pair: Pair, created: list[str], outcomes: list[Outcome], stop):
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        while not stop.is_set():
            key, body = uuid.uuid4().hex, referral_body()
            started = time.monotonic()
            response = await client.post(
                "/api/v1/referrals",
                json=body,
                headers={**pair.referrer, "Idempotency-Key": key},
            )
            seconds = time.monotonic() - started
            outcomes.append(Outcome("intake", key, response.status_code, started, seconds, body))
            assert response.status_code in (201, 503), response.text
            assert response.status_code == 201 or _is_problem_503(response)
            if response.status_code == 201:
                created.append(response.json()["id"])
            if created:
                started = time.monotonic()
                read = await client.get(f"/api/v1/cases/{created[-1]}", headers=pair.coordinator)
                outcomes.append(
                    Outcome("read", "", read.status_code, started, time.monotonic() - started)
                )
                assert read.status_code == 200 or _is_problem_503(read), read.text


async def test_database_restart_under_load_503_then_recovery_and_no_partial_writes(
    app, settings, test_db, tmp_path
):
    pair = await _pair(app)
    url = make_url(test_db.url)
    proxy = DatabaseProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.up()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    server = ServerProcess(["serve"], cli_env(settings, proxied), tmp_path / "server.log")
    outcomes: list[Outcome] = []
    created: list[str] = []
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(server.wait_ready)
        clients = [
            asyncio.create_task(_load(server.base_url, pair, created, outcomes, stop))
            for _ in range(6)
        ]
        await asyncio.sleep(1.5)
        await proxy.down()
        went_down = time.monotonic()
        await asyncio.sleep(3)
        came_back = time.monotonic()
        await proxy.up()
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*clients)
        # The client retries the intakes that failed, as they were: each lands exactly once.
        # A 503 can hide a commit whose answer the outage swallowed; the retry then gets
        # the stored outcome (201) instead of a second case.
        failed = [o for o in outcomes if o.kind == "intake" and o.status == 503]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as client:
            for attempt in failed:
                retry = await client.post(
                    "/api/v1/referrals",
                    json=attempt.body,
                    headers={**pair.referrer, "Idempotency-Key": attempt.key},
                )
                assert retry.status_code == 201, retry.text
    finally:
        stop.set()
        await asyncio.to_thread(server.stop)
        await proxy.down()

    statuses = Counter((o.kind, o.status) for o in outcomes)
    # Every request made wholly while the database was down failed cleanly.
    during = [o for o in outcomes if went_down <= o.at and o.at + o.seconds < came_back]
    assert during, statuses
    assert all(o.status == 503 for o in during), statuses
    assert max(o.seconds for o in outcomes) < 5, "a request hung while the database was down"
    settled = [o for o in outcomes if o.at > came_back + 2]
    assert settled, statuses
    assert all(o.status in (200, 201) for o in settled), statuses
    assert statuses[("intake", 201)] > 0
    assert statuses[("read", 200)] > 0

    keys = {o.key for o in outcomes if o.kind == "intake"}
    async with app.state.sessionmaker() as session:
        count = lambda model, *where: session.scalar(  # noqa: E731
            select(func.count()).select_from(model).where(*where)
        )
        cases = await count(CaseFile, CaseFile.referrer_user_id == pair.referrer_id)
        records = await count(IdempotencyRecord, IdempotencyRecord.user_id == pair.referrer_id)
        creates = await count(
            AuditEvent,
            AuditEvent.actor_user_id == pair.referrer_id,
            AuditEvent.action == "case.create",
        )
    async with app.state.sessionmaker() as session:
        verification = await chain.verify(session, app.state.audit_keys)
    assert (cases, records, creates) == (len(keys),) * 3
    assert verification.ok, verification


# --- SIGTERM ------------------------------------------------------------------------------------


async def test_sigterm_lets_the_request_in_flight_finish_then_exits(
    app, settings, test_db, tmp_path
):
    pair = await _pair(app)
    server = ServerProcess(["serve"], cli_env(settings, test_db.url), tmp_path / "server.log")
    url = make_url(test_db.url)
    blocker = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            receipt = await client.post(
                "/api/v1/referrals",
                json=referral_body(),
                headers={**pair.referrer, "Idempotency-Key": uuid.uuid4().hex},
            )
            case_id = receipt.json()["id"]
            # Hold the case's row: a note on it waits for the row, as every write to a case
            # does (touch_case).
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute(
                "SELECT * FROM case_file WHERE id = $1 FOR UPDATE", uuid.UUID(case_id)
            )
            slow = asyncio.create_task(
                client.post(
                    f"/api/v1/cases/{case_id}/notes",
                    json={"section": "general", "body": "Synthetic note written during SIGTERM."},
                    headers=pair.coordinator,
                )
            )
            await until_waiting_on_a_lock(blocker, url.database)
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.5)
            assert server.process.poll() is None, "exited with a request in flight"
            await transaction.rollback()
            response = await slow
        assert response.status_code == 201, response.text
        assert response.json()["body"] == "Synthetic note written during SIGTERM."
        exit_code = await asyncio.to_thread(server.process.wait, 20)
        # uvicorn shuts down gracefully, then re-raises the signal it caught, so that the
        # exit status says why it stopped; the log shows it finished rather than died.
        assert exit_code in (0, -signal.SIGTERM)
        log = server.log.read_text()
        assert "Waiting for application shutdown" in log
        assert "Finished server process" in log
    finally:
        await blocker.close()
        await asyncio.to_thread(server.stop)
