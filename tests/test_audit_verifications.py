"""Walks of the whole trail: an auditor asks, the server walks and keeps the result (ADR 0024).

A walk of tens of millions of events outlasts any proxy, so the request that asks for one is
answered at once, and the auditor reads the walk's progress and result as it goes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from referral import apart, jobs
from referral.audit import verifications
from referral.audit.chain import Verification
from referral.models import AuditEvent, AuditVerification
from referral.models.base import utcnow
from referral.models.enums import Role
from tests.conftest import World, bearer, login
from tests.helpers import (
    another_worker_finishes,
    audit_events,
    ended_job,
    scratch_app,
    tamper,
    until_waiting_on_a_lock,
)

URL = "/api/v1/audit/verifications"


async def _result_of(app, walk_id: str) -> AuditEvent:
    """The event that records how walk `walk_id` ended: there is exactly one."""
    (result,) = [
        e
        for e in await audit_events(app, action="audit.verify_result")
        if e.resource_ids == [walk_id]
    ]
    return result


def _held_walks(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Walks that start, then wait for the test to let them finish: (walking, finish). They
    wait here, before the walk's process starts, so the test's events reach them."""
    walking, finish = asyncio.Event(), asyncio.Event()
    walk_apart = verifications._walk_apart

    async def a_long_walk(*args, **kwargs):
        walking.set()
        await finish.wait()
        return await walk_apart(*args, **kwargs)

    monkeypatch.setattr(verifications, "_walk_apart", a_long_walk)
    return walking, finish


def _walks_forked(monkeypatch, work) -> None:
    """Walks whose process runs `work` in place of the walk. (fork, not spawn, so that the
    child runs the function put in its place here.)"""
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(apart.multiprocessing, "get_context", lambda _method: fork)
    monkeypatch.setattr(verifications, "_walk_in_this_process", work)


def _dies(*_args):
    os._exit(1)  # as a process killed for its memory would end


def _reports_then_waits(*_args):
    """A walk's process that reports its progress, then waits for the test to let it go."""
    apart.report(7)
    flag = Path(os.environ[HELD])
    while not flag.exists():
        time.sleep(0.02)
    apart.report(5)
    return Verification(ok=True, checked=12)


HELD = "REFERRAL_TEST_HELD_WALK"


async def test_an_auditor_asks_for_a_walk_and_reads_its_result(client, app, signed_in):
    account, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers)

    assert asked.status_code == 202, asked.text
    walk_id = asked.json()["id"]
    assert asked.headers["location"] == f"{URL}/{walk_id}"
    assert asked.json()["requested_by"] == str(account.id)
    walk = await ended_job(client, headers, asked.headers["location"])
    assert walk["status"] == "ok", walk
    assert walk["first_broken"] is None
    assert walk["reason"] is None
    assert walk["checked"] > 0
    assert walk["head_seq"] >= walk["checked"]
    assert walk["finished_at"] >= walk["requested_at"]
    listed = (await client.get(URL, headers=headers)).json()
    assert listed[0]["id"] == walk_id  # newest first

    asked_for = await audit_events(app, action="audit.verify", actor_user_id=account.id)
    assert [(e.purpose, e.resource_ids) for e in asked_for] == [("started", [walk_id])]
    result = await _result_of(app, walk_id)
    assert (result.outcome, result.purpose) == ("allowed", "ok")
    read = await audit_events(app, action="audit.verification", actor_user_id=account.id)
    assert read
    assert all(e.resource_ids == [walk_id] for e in read)


async def test_one_walk_at_a_time_asking_again_joins_the_one_running(
    client, app, signed_in, monkeypatch
):
    walking, finish = _held_walks(monkeypatch)
    first_auditor, first = await signed_in(Role.auditor)
    second_auditor, second = await signed_in(Role.auditor)

    started = await client.post(URL, headers=first)
    await asyncio.wait_for(walking.wait(), timeout=10)
    try:
        joined = await client.post(URL, headers=second)
        running = (await client.get(started.headers["location"], headers=second)).json()
    finally:
        finish.set()

    assert (started.status_code, joined.status_code) == (202, 202)
    assert joined.json()["id"] == started.json()["id"]
    assert joined.headers["location"] == started.headers["location"]
    assert running["status"] == "running"
    assert (await ended_job(client, first, started.headers["location"]))["status"] == "ok"
    async with app.state.sessionmaker() as session:
        walks = (
            await session.exec(
                select(AuditVerification.id).where(
                    col(AuditVerification.requested_by).in_([first_auditor.id, second_auditor.id])
                )
            )
        ).all()
    assert [str(walk_id) for walk_id in walks] == [started.json()["id"]]
    purposes = {
        e.actor_user_id: e.purpose
        for e in await audit_events(app, action="audit.verify")
        if e.resource_ids == [started.json()["id"]]
    }
    assert purposes == {first_auditor.id: "started", second_auditor.id: "joined"}
    after = await client.post(URL, headers=second)  # once it has ended, asking walks again
    assert after.json()["id"] != started.json()["id"]
    await ended_job(client, second, after.headers["location"])


async def test_a_running_walk_keeps_writing_its_heartbeat(client, app, signed_in, monkeypatch):
    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0.05)
    walking, finish = _held_walks(monkeypatch)
    _, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers)
    await asyncio.wait_for(walking.wait(), timeout=10)
    began = datetime.fromisoformat(asked.json()["heartbeat_at"])
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            walk = (await client.get(asked.headers["location"], headers=headers)).json()
            if datetime.fromisoformat(walk["heartbeat_at"]) > began:
                break
    finally:
        finish.set()

    assert walk["status"] == "running"
    assert datetime.fromisoformat(walk["heartbeat_at"]) > began, "no heartbeat was written"
    assert (await ended_job(client, headers, asked.headers["location"]))["status"] == "ok"


async def test_the_walks_process_reports_its_progress_to_the_row(
    client, app, signed_in, monkeypatch, tmp_path
):
    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0.05)
    flag = tmp_path / "let-go"
    monkeypatch.setenv(HELD, str(flag))
    _walks_forked(monkeypatch, _reports_then_waits)
    _, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers)
    try:
        for _ in range(200):
            walk = (await client.get(asked.headers["location"], headers=headers)).json()
            if walk["checked"] == 7:
                break
            await asyncio.sleep(0.05)
    finally:
        flag.touch()

    assert (walk["status"], walk["checked"]) == ("running", 7)  # the heartbeat carried it
    ended = await ended_job(client, headers, asked.headers["location"])
    assert (ended["status"], ended["checked"]) == ("ok", 12)  # the walk's own count, at the end


async def test_a_walk_whose_process_dies_is_failed_and_the_server_goes_on(
    client, app, signed_in, monkeypatch
):
    _walks_forked(monkeypatch, _dies)
    _, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers)

    walk = await ended_job(client, headers, asked.headers["location"])

    assert walk["status"] == "failed"
    assert walk["reason"] == (
        "the walk's process ended without an answer (killed, or out of memory); ask for a new one"
    )
    result = await _result_of(app, walk["id"])
    assert (result.outcome, result.purpose) == ("error", "failed")
    assert (await client.get("/livez")).status_code == 200


async def test_a_walk_whose_server_died_is_ended_and_a_new_one_starts(client, app, signed_in):
    account, headers = await signed_in(Role.auditor)
    long_ago = utcnow() - jobs.STALE_AFTER - timedelta(seconds=1)
    orphan = AuditVerification(requested_by=account.id, heartbeat_at=long_ago, checked=5)
    async with app.state.sessionmaker() as session, session.begin():
        session.add(orphan)

    asked = await client.post(URL, headers=headers)

    assert asked.status_code == 202, asked.text
    assert asked.json()["id"] != str(orphan.id)
    ended = (await client.get(f"{URL}/{orphan.id}", headers=headers)).json()
    assert ended["status"] == "failed"
    assert "stopped before it finished" in ended["reason"]
    result = await _result_of(app, str(orphan.id))  # its end is in the trail, like any walk's
    assert (result.outcome, result.purpose) == ("error", "failed")
    assert (await ended_job(client, headers, asked.headers["location"]))["status"] == "ok"


async def test_a_walk_still_beating_is_not_taken_over(client, app, signed_in):
    account, headers = await signed_in(Role.auditor)
    alive = AuditVerification(requested_by=account.id)  # another worker's, beating just now
    async with app.state.sessionmaker() as session, session.begin():
        session.add(alive)

    try:
        asked = await client.post(URL, headers=headers)
    finally:
        await another_worker_finishes(app, alive.id)

    assert asked.json()["id"] == str(alive.id)
    assert asked.json()["status"] == "running"


async def test_a_walk_cut_short_by_shutdown_is_recorded_as_failed(
    client, app, signed_in, monkeypatch
):
    walking, _ = _held_walks(monkeypatch)
    _, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers)
    await asyncio.wait_for(walking.wait(), timeout=10)

    await app.state.verifier.finished()  # what the server's shutdown does

    walk = (await client.get(asked.headers["location"], headers=headers)).json()
    assert walk["status"] == "failed"
    assert "stopped before it finished" in walk["reason"]
    result = await _result_of(app, asked.json()["id"])
    assert (result.outcome, result.purpose) == ("error", "failed")


async def test_a_broken_trail_is_reported_with_the_first_event_that_does_not_hold(
    settings, tmp_path
):
    async with scratch_app(settings, tmp_path, "walk") as (app, client, _, database):
        auditor = await World(app).account(Role.auditor)
        headers = bearer(await login(client, auditor))
        (rewritten, *_) = await audit_events(app, action="auth.login")
        await tamper(
            database,
            "audit_event",
            f"UPDATE audit_event SET outcome = 'denied' WHERE seq = {rewritten.seq}",
        )

        asked = await client.post(URL, headers=headers)
        walk = await ended_job(client, headers, asked.headers["location"])

        assert walk["status"] == "broken", walk
        assert walk["first_broken"] == rewritten.seq
        assert walk["reason"]
        result = await _result_of(app, walk["id"])
        assert (result.outcome, result.purpose) == ("allowed", "broken")


@pytest.mark.parametrize(
    "path", [f"{URL}/not-a-uuid", f"{URL}/00000000-0000-0000-0000-000000000000"]
)
async def test_an_unknown_walk_is_a_problem_and_audited(client, app, signed_in, path):
    account, headers = await signed_in(Role.auditor)
    answer = await client.get(path, headers=headers)

    assert answer.status_code in (404, 422)
    assert answer.headers["content-type"] == "application/problem+json"
    if answer.status_code == 404:
        denied = await audit_events(app, actor_user_id=account.id, outcome="denied")
        assert [e.status_code for e in denied] == [404]


async def _walks_by(app, account) -> int:
    statement = select(AuditVerification.id).where(AuditVerification.requested_by == account.id)
    async with app.state.sessionmaker() as session:
        return len((await session.exec(statement)).all())


@pytest.mark.parametrize(
    "body",
    [
        {"status": "ok", "requested_by": "00000000-0000-0000-0000-000000000000"},
        {"checkpoint": {"seq": 0, "hash": "ab" * 32}},
        {"checkpoint": {"seq": 5, "hash": "AB" * 32}},
        {"checkpoint": {"seq": 5, "hash": "ab" * 31}},
        {"checkpoint": {"seq": 5}},
        {"checkpoint": {"seq": 2**63, "hash": "ab" * 32}},
        {"checkpoint": {"seq": 5, "hash": "ab" * 32, "trusted": True}},
    ],
)
async def test_a_bad_request_for_a_walk_is_a_problem_and_starts_none(client, app, signed_in, body):
    """Nothing a caller sends sets who asked, the status or the result (mass assignment),
    and a checkpoint that is not one is refused."""
    account, headers = await signed_in(Role.auditor)
    asked = await client.post(URL, headers=headers, json=body)

    assert asked.status_code == 422, asked.text
    assert asked.headers["content-type"] == "application/problem+json"
    assert await _walks_by(app, account) == 0


async def test_a_walk_against_a_kept_head_finds_the_tail_cut_away(settings, tmp_path):
    """The auditor keeps the head of a walk outside the database. Someone who can write to
    the database cuts the trail back and rewinds the chain's head row: a walk without the
    head finds nothing wrong, the walk against it does."""
    async with scratch_app(settings, tmp_path, "kept") as (app, client, _, database):
        auditor = await World(app).account(Role.auditor)
        headers = bearer(await login(client, auditor))
        first = await client.post(URL, headers=headers)
        head = await ended_job(client, headers, first.headers["location"])
        kept = {"seq": head["head_seq"], "hash": head["head_hash"]}
        untouched = await client.post(URL, headers=headers, json={"checkpoint": kept})
        assert untouched.status_code == 202, untouched.text
        assert (await ended_job(client, headers, untouched.headers["location"]))["status"] == "ok"

        # the walk's own result event is chained after the walk's row says it ended: the
        # trail is cut once the sealer has caught up, as an intruder's edit would be
        await app.state.sealer.sealed()
        cut = kept["seq"] - 2
        async with app.state.sessionmaker() as session:
            last = (await session.exec(select(AuditEvent).where(AuditEvent.seq == cut))).one()
        await tamper(
            database,
            "audit_event",
            f"DELETE FROM audit_event WHERE seq > {cut}",
            f"UPDATE audit_chain_head SET seq = {cut}, hash = '{last.hash}'",
        )

        plain = await client.post(URL, headers=headers)
        assert (await ended_job(client, headers, plain.headers["location"]))["status"] == "ok"
        against = await client.post(URL, headers=headers, json={"checkpoint": kept})
        walk = await ended_job(client, headers, against.headers["location"])

        assert walk["status"] == "broken", walk
        assert (walk["checkpoint_seq"], walk["checkpoint_hash"]) == (kept["seq"], kept["hash"])
        assert "checkpoint" in walk["reason"]
        asked = await audit_events(app, action="audit.verify", actor_user_id=auditor.id)
        assert asked[-1].fields == ["checkpoint"]


async def test_a_walk_against_a_checkpoint_does_not_join_one_without(
    client, app, signed_in, monkeypatch
):
    walking, finish = _held_walks(monkeypatch)
    _, headers = await signed_in(Role.auditor)
    other, other_headers = await signed_in(Role.auditor)
    started = await client.post(URL, headers=headers)
    await asyncio.wait_for(walking.wait(), timeout=10)
    try:
        kept = {"checkpoint": {"seq": 1, "hash": "ab" * 32}}
        refused = await client.post(URL, headers=other_headers, json=kept)
        joined = await client.post(URL, headers=other_headers)  # without one, it joins
    finally:
        finish.set()

    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert joined.json()["id"] == started.json()["id"]
    assert await _walks_by(app, other) == 0
    await ended_job(client, headers, started.headers["location"])


@pytest.mark.postgres_only
async def test_two_workers_asking_at_once_start_one_walk(app, signed_in, test_db):
    """Two workers, each finding no walk running, both insert one: the second waits on the
    first's row in the unique index, then joins it rather than failing."""
    account, _ = await signed_in(Role.auditor)
    url = make_url(test_db.url)
    watcher = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    first = app.state.sessionmaker()
    try:
        await first.begin()
        mine, started = await verifications.claim(first, account.id)
        assert started

        async def second_worker() -> tuple[AuditVerification, bool]:
            async with app.state.sessionmaker() as session, session.begin():
                return await verifications.claim(session, account.id)

        other = asyncio.ensure_future(second_worker())
        await until_waiting_on_a_lock(watcher, url.database)
        await first.commit()
        theirs, they_started = await asyncio.wait_for(other, timeout=10)
    finally:
        await first.close()
        await watcher.close()

    assert (theirs.id, they_started) == (mine.id, False)
