"""Builds of snapshots: a national analyst asks, the server builds and keeps the result
(ADR 0026).

A national build reads a million cases for about a minute, longer than a proxy waits, so
the request that asks for one is answered at once, and the analyst reads the build's
progress and what it published as it goes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlmodel import func, select

from referral import apart, jobs
from referral.models import AuditEvent, StatsCell, StatsSnapshot, StatsSnapshotBuild
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from referral.stats import snapshot
from referral.stats.disclosure import GateFailure
from tests.helpers import BUILDS_URL, audit_events, built, ended_job

HELD = "REFERRAL_TEST_HELD_BUILD"


@pytest.fixture
async def national(signed_in):
    return await signed_in(Role.national_analyst, agency=Agency.municipality)


async def _result_of(app, build_id: str) -> AuditEvent:
    """The event that records how build `build_id` ended: there is exactly one."""
    (result,) = [
        e
        for e in await audit_events(app, action="stats.snapshot_result")
        if e.resource_ids[0] == build_id
    ]
    return result


async def _published(app) -> list[int]:
    """What a build publishes: snapshots, cells, and the trail's record of publishing."""
    async with app.state.sessionmaker() as session:
        return [
            (await session.exec(select(func.count()).select_from(table).where(where))).one()
            for table, where in (
                (StatsSnapshot, True),
                (StatsCell, True),
                (AuditEvent, AuditEvent.purpose == "published"),
            )
        ]


def _in_a_fork(monkeypatch, work) -> None:
    """Builds whose process runs `work` in place of computing the cells. (fork, not spawn,
    so that the child runs the function put in its place here.)"""
    fork = multiprocessing.get_context("fork")
    monkeypatch.setattr(apart.multiprocessing, "get_context", lambda _method: fork)
    monkeypatch.setattr(snapshot, "_cells_in_this_process", work)


def _dies(*_args):
    os._exit(1)  # as a build process killed for its memory would end


def _raises(*_args):
    raise ValueError("a bug in the build")


def _refused(*_args):
    raise GateFailure("the cell referrals/2025/T01 would be derivable")


def _held(*_args):
    """A build that waits until the test lets it go, then publishes nothing."""
    flag = Path(os.environ[HELD])
    while not flag.exists():
        time.sleep(0.02)
    raise GateFailure("let go by the test")


def _hold(monkeypatch, tmp_path) -> Path:
    flag = tmp_path / "let-go"
    monkeypatch.setenv(HELD, str(flag))
    _in_a_fork(monkeypatch, _held)
    return flag


def _build_processes() -> list:
    return [p for p in multiprocessing.active_children() if p.name == "referral-snapshot-build"]


async def test_the_request_is_answered_at_once_and_the_build_publishes(client, app, national):
    account, headers = national
    asked = await client.post(BUILDS_URL, headers=headers)

    assert asked.status_code == 202, asked.text
    build_id = asked.json()["id"]
    assert asked.headers["location"] == f"{BUILDS_URL}/{build_id}"
    assert asked.json()["status"] == "running"  # answered before the build ended
    assert asked.json()["snapshot"] is None
    assert asked.json()["as_of"] == date.today().isoformat()
    assert asked.json()["requested_by"] == str(account.id)
    build = await ended_job(client, headers, asked.headers["location"])
    assert build["status"] == "published", build
    assert build["reason"] is None
    assert build["finished_at"] >= build["requested_at"]
    async with app.state.sessionmaker() as session:
        made = await session.get(StatsSnapshot, uuid.UUID(build["snapshot"]["id"]))
        cells = (
            await session.exec(
                select(func.count()).select_from(StatsCell).where(StatsCell.snapshot_id == made.id)
            )
        ).one()
    assert build["snapshot"]["cells"] == made.cells == cells
    assert build["snapshot"]["suppressed"] == made.suppressed
    assert made.created_by == account.id
    listed = (await client.get(BUILDS_URL, headers=headers)).json()
    assert listed[0]["id"] == build_id  # newest first
    assert listed[0]["snapshot"] == build["snapshot"]

    asked_for = await audit_events(app, action="stats.snapshot", actor_user_id=account.id)
    assert [(e.purpose, e.resource_ids, e.fields) for e in asked_for] == [
        ("started", [build_id], ["as_of"])
    ]
    result = await _result_of(app, build_id)
    assert (result.outcome, result.purpose) == ("allowed", "published")
    assert result.resource_ids == [build_id, build["snapshot"]["id"]]
    read = await audit_events(app, action="stats.snapshot_build", actor_user_id=account.id)
    assert read
    assert all(e.resource_ids == [build_id] for e in read)


async def test_one_build_at_a_time_asking_again_joins_it_and_another_date_is_409(
    client, app, signed_in, monkeypatch, tmp_path
):
    let_go = _hold(monkeypatch, tmp_path)
    first_analyst, first = await signed_in(Role.national_analyst, agency=Agency.municipality)
    second_analyst, second = await signed_in(Role.national_analyst, agency=Agency.municipality)
    yesterday = (date.today() - timedelta(days=1)).isoformat()

    started = await client.post(BUILDS_URL, headers=first)
    try:
        joined = await client.post(BUILDS_URL, headers=second)
        other_date = await client.post(BUILDS_URL, headers=second, params={"as_of": yesterday})
        running = (await client.get(started.headers["location"], headers=second)).json()
    finally:
        let_go.touch()

    assert (started.status_code, joined.status_code) == (202, 202)
    assert joined.json()["id"] == started.json()["id"]
    assert joined.headers["location"] == started.headers["location"]
    assert other_date.status_code == 409, other_date.text
    assert other_date.headers["content-type"] == "application/problem+json"
    assert "is being built" in other_date.json()["detail"]
    assert running["status"] == "running"
    ended = await ended_job(client, first, started.headers["location"])
    assert ended["status"] == "refused"
    async with app.state.sessionmaker() as session:
        builds = (
            await session.exec(
                select(StatsSnapshotBuild.id).where(
                    StatsSnapshotBuild.requested_by.in_([first_analyst.id, second_analyst.id])
                )
            )
        ).all()
    assert [str(build_id) for build_id in builds] == [started.json()["id"]]
    purposes = {
        e.actor_user_id: e.purpose
        for e in await audit_events(app, action="stats.snapshot", outcome="allowed")
        if e.resource_ids == [started.json()["id"]]
    }
    assert purposes == {first_analyst.id: "started", second_analyst.id: "joined"}


async def test_a_build_whose_process_dies_fails_and_publishes_nothing(
    client, app, national, monkeypatch
):
    _in_a_fork(monkeypatch, _dies)
    _, headers = national
    before = await _published(app)

    build = await built(client, headers)

    assert build["status"] == "failed", build
    assert "ended without an answer" in build["reason"]
    assert build["snapshot"] is None
    assert await _published(app) == before
    result = await _result_of(app, build["id"])
    assert (result.outcome, result.purpose) == ("error", "failed")
    assert result.resource_ids == [build["id"]]


async def test_a_build_whose_process_fails_says_how_and_publishes_nothing(
    client, app, national, monkeypatch
):
    _in_a_fork(monkeypatch, _raises)
    _, headers = national
    before = await _published(app)

    build = await built(client, headers)

    assert build["status"] == "failed", build
    assert "failed (ValueError)" in build["reason"]
    assert "a bug in the build" not in build["reason"]  # the child's message stays in its log
    assert await _published(app) == before


async def test_a_build_the_audit_gate_refuses_publishes_nothing(client, app, national, monkeypatch):
    _in_a_fork(monkeypatch, _refused)
    _, headers = national
    before = await _published(app)

    build = await built(client, headers)

    assert build["status"] == "refused", build
    assert build["reason"].startswith("The audit gate refused to publish")
    assert "derivable" in build["reason"]
    assert build["snapshot"] is None
    assert await _published(app) == before
    result = await _result_of(app, build["id"])
    assert (result.outcome, result.purpose) == ("allowed", "refused")  # the gate did its work


async def test_a_build_whose_server_died_is_ended_and_a_new_one_starts(
    client, app, national, monkeypatch
):
    _in_a_fork(monkeypatch, _refused)
    account, headers = national
    long_ago = utcnow() - jobs.STALE_AFTER - timedelta(seconds=1)
    orphan = StatsSnapshotBuild(requested_by=account.id, as_of=date.today(), heartbeat_at=long_ago)
    async with app.state.sessionmaker() as session, session.begin():
        session.add(orphan)

    asked = await client.post(BUILDS_URL, headers=headers)

    assert asked.status_code == 202, asked.text
    assert asked.json()["id"] != str(orphan.id)
    ended = (await client.get(f"{BUILDS_URL}/{orphan.id}", headers=headers)).json()
    assert ended["status"] == "failed"
    assert "stopped before it finished" in ended["reason"]
    result = await _result_of(app, str(orphan.id))  # its end is in the trail, like any build's
    assert (result.outcome, result.purpose) == ("error", "failed")
    assert (await ended_job(client, headers, asked.headers["location"]))["status"] == "refused"


async def test_a_build_cut_short_by_shutdown_is_failed_and_its_process_ended(
    client, app, national, monkeypatch, tmp_path
):
    let_go = _hold(monkeypatch, tmp_path)
    _, headers = national
    try:
        asked = await client.post(BUILDS_URL, headers=headers)
        for _ in range(200):
            if _build_processes():
                break
            await asyncio.sleep(0.05)
        assert _build_processes(), "the build's process did not start"

        await app.state.builder.finished()  # what the server's shutdown does

        assert _build_processes() == []
    finally:
        let_go.touch()
    build = (await client.get(asked.headers["location"], headers=headers)).json()
    assert build["status"] == "failed"
    assert "stopped before it finished" in build["reason"]
    result = await _result_of(app, asked.json()["id"])
    assert (result.outcome, result.purpose) == ("error", "failed")


@pytest.mark.parametrize(
    "path", [f"{BUILDS_URL}/not-a-uuid", f"{BUILDS_URL}/00000000-0000-0000-0000-000000000000"]
)
async def test_an_unknown_build_is_a_problem_and_audited(client, app, national, path):
    account, headers = national
    answer = await client.get(path, headers=headers)
    assert answer.status_code in (404, 422), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    if answer.status_code == 404:
        denied = await audit_events(app, actor_user_id=account.id, outcome="denied")
        assert [e.status_code for e in denied] == [404]


@pytest.mark.parametrize("as_of", ["tomorrow", "2024-02-30", "not-a-date"])
async def test_a_bad_date_is_a_problem_and_starts_no_build(client, app, national, as_of):
    _, headers = national
    if as_of == "tomorrow":
        as_of = (date.today() + timedelta(days=1)).isoformat()
    async with app.state.sessionmaker() as session:
        before = (await session.exec(select(func.count()).select_from(StatsSnapshotBuild))).one()
    answer = await client.post(BUILDS_URL, headers=headers, params={"as_of": as_of})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"] == ["query", "as_of"]
    assert as_of not in answer.text  # a validation error never echoes the value
    async with app.state.sessionmaker() as session:
        after = (await session.exec(select(func.count()).select_from(StatsSnapshotBuild))).one()
    assert after == before
