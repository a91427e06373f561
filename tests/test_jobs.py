"""Jobs a worker left running when it died (killed, out of memory, the machine gone).

Their rows say `running` until someone ends them. The user who asked for one polls it, and
must see it end without anyone having to ask for a new job: every worker, from its
start-up, ends a job whose heartbeat has stopped."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import httpx
import pytest

from referral import jobs
from referral.main import create_app
from referral.models import AuditVerification, StatsSnapshotBuild
from referral.models.base import utcnow
from referral.models.enums import Agency, Role
from tests.helpers import BUILDS_URL, another_worker_finishes, audit_events, ended_job

WALKS_URL = "/api/v1/audit/verifications"


@pytest.fixture
def watching_often(monkeypatch):
    monkeypatch.setattr(jobs, "WATCH_SECONDS", 0.05)


def _long_ago():
    return utcnow() - jobs.STALE_AFTER - timedelta(seconds=1)


async def _served(settings, *rows):
    """The rows a dead worker left, then a worker starting up as `referral serve` would."""
    app = create_app(settings)
    async with app.state.sessionmaker() as session, session.begin():
        session.add_all(rows)
    return app


async def test_jobs_whose_worker_died_end_without_anyone_asking(
    settings, signed_in, watching_often
):
    auditor, auditor_headers = await signed_in(Role.auditor)
    analyst, analyst_headers = await signed_in(Role.national_analyst, agency=Agency.municipality)
    walk = AuditVerification(requested_by=auditor.id, heartbeat_at=_long_ago(), checked=5)
    build = StatsSnapshotBuild(
        requested_by=analyst.id, as_of=date.today(), heartbeat_at=_long_ago()
    )
    app = await _served(settings, walk, build)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ended_walk = await ended_job(client, auditor_headers, f"{WALKS_URL}/{walk.id}")
            ended_build = await ended_job(client, analyst_headers, f"{BUILDS_URL}/{build.id}")
            walk_result = await audit_events(app, action="audit.verify_result")
            build_result = await audit_events(app, action="stats.snapshot_result")

    for ended in (ended_walk, ended_build):
        assert ended["status"] == "failed"
        assert "stopped before it finished; ask for a new one" in ended["reason"]
    assert ended_walk["checked"] == 5  # what it had done is still there to read
    # each end is in the trail once, as any job's end is
    assert [(e.outcome, e.purpose) for e in walk_result if str(walk.id) in e.resource_ids] == [
        ("error", "failed")
    ]
    assert [(e.outcome, e.purpose) for e in build_result if str(build.id) in e.resource_ids] == [
        ("error", "failed")
    ]


async def test_a_job_still_beating_is_left_to_its_worker(settings, signed_in, watching_often):
    auditor, headers = await signed_in(Role.auditor)
    alive = AuditVerification(requested_by=auditor.id)  # another worker's, beating just now
    app = await _served(settings, alive)
    try:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(20 * jobs.WATCH_SECONDS)  # many looks
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                seen = (await client.get(f"{WALKS_URL}/{alive.id}", headers=headers)).json()
    finally:
        await another_worker_finishes(app, alive.id)
        await app.state.engine.dispose()

    assert (seen["status"], seen["reason"]) == ("running", None)
