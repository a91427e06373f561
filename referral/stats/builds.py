"""Builds of snapshots, run by the server and kept as rows (ADR 0026).

At national scale a build reads a million cases and protects the family: about a minute,
longer than a proxy waits, holding a pooled connection idle in its transaction all along.
So a national analyst's request only starts a build (or joins the one running) and is
answered at once; the server computes the cells in a process of its own (ADR 0025), then
publishes the snapshot, ends the build and records its end in the trail in one
transaction, and the analyst reads the build as it goes.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral import jobs
from referral.audit.sealer import Sealer
from referral.config import Settings
from referral.errors import Conflict, NotFound
from referral.models import StatsSnapshot, StatsSnapshotBuild
from referral.stats import snapshot
from referral.stats.disclosure import GateFailure
from referral.stats.policy import ReportingPolicy
from referral.stats.schemas import SnapshotBuildOut, SnapshotOut

BUILDS = jobs.Kind(
    model=StatsSnapshotBuild,
    noun="build",
    result_action="stats.snapshot_result",
    made=lambda build: [str(build.snapshot_id)] if build.snapshot_id else [],
)


async def claim(
    session: AsyncSession, requested_by: uuid.UUID, as_of: date
) -> tuple[StatsSnapshotBuild, bool]:
    """The build running now, or a new one: (the build, whether this call started it). A
    build as of another date is not joined: it would publish other periods than asked."""

    def join(running: StatsSnapshotBuild) -> StatsSnapshotBuild:
        if running.as_of != as_of:
            raise Conflict(
                f"A snapshot as of {running.as_of.isoformat()} is being built; ask again once "
                "it has finished."
            )
        return running

    return await jobs.claim(
        session, BUILDS, StatsSnapshotBuild(requested_by=requested_by, as_of=as_of), join
    )


def _with_snapshot():
    return select(StatsSnapshotBuild, StatsSnapshot).outerjoin(
        StatsSnapshot, col(StatsSnapshot.id) == col(StatsSnapshotBuild.snapshot_id)
    )


def _out(build: StatsSnapshotBuild, made: StatsSnapshot | None) -> SnapshotBuildOut:
    return SnapshotBuildOut(
        id=build.id,
        status=build.status,
        as_of=build.as_of,
        requested_by=build.requested_by,
        requested_at=build.requested_at,
        heartbeat_at=build.heartbeat_at,
        finished_at=build.finished_at,
        reason=build.reason,
        snapshot=None
        if made is None
        else SnapshotOut(
            id=made.id, as_of=made.as_of, cells=made.cells, suppressed=made.suppressed
        ),
    )


async def read(session: AsyncSession, build_id: uuid.UUID) -> SnapshotBuildOut:
    found = (await session.exec(_with_snapshot().where(StatsSnapshotBuild.id == build_id))).first()
    if found is None:
        raise NotFound("No such snapshot build.")
    return _out(*found)


async def latest(session: AsyncSession, limit: int) -> list[SnapshotBuildOut]:
    statement = _with_snapshot().order_by(
        col(StatsSnapshotBuild.requested_at).desc(), col(StatsSnapshotBuild.id).desc()
    )
    return [_out(*found) for found in (await session.exec(statement.limit(limit))).all()]


def view_of(build: StatsSnapshotBuild) -> SnapshotBuildOut:
    """A build as claimed: running, so nothing published yet."""
    return _out(build, None)


class Builder:
    """Runs the builds this process started, each as a task of its own."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        sealer: Sealer,
        settings: Settings,
        policy: ReportingPolicy,
    ) -> None:
        self._settings = settings
        self._policy = policy
        self.runner = jobs.Runner(sessionmaker, sealer, settings.audit_chain_keys, BUILDS)

    async def start(self, build_id: uuid.UUID, as_of: date, requested_by: uuid.UUID) -> None:
        """Start the build whose row the request has committed; return at once. (A coroutine
        so that a request's background runs it on the event loop, not in a thread.)"""

        async def build() -> jobs.Finish:
            try:
                cells = await snapshot.cells_apart(self._settings, self._policy, as_of)
            except GateFailure as exc:
                return jobs.ending("refused", f"The audit gate refused to publish: {exc}.")

            async def publish(session: AsyncSession, row: StatsSnapshotBuild) -> None:
                made = await snapshot.store(session, self._policy, as_of, requested_by, cells)
                row.snapshot_id = made.id
                jobs.end(row, status="published")

            return publish

        self.runner.start(build_id, build)

    async def finished(self) -> None:
        """At shutdown: stop the builds in progress (and their processes); each is recorded
        as `failed` (stopped)."""
        await self.runner.finished()
