"""Work the server runs after answering the request that asked for it (ADR 0024, ADR 0026).

Some work outlasts any proxy's wait: a walk of tens of millions of audit events, a snapshot
built from a million cases. The request that asks for it inserts a `running` row and is
answered at once (202 and a `Location`); the server does the work and records how it ended
on the row, with an event in the trail, and the user reads the row as it goes.

One job of a kind at a time, across every worker: a partial unique index admits one
`running` row, and asking while one runs answers that one. A running job writes its
heartbeat every few seconds; one whose heartbeat has stopped has lost its worker (killed,
or the machine gone). Every worker looks for such a job every few seconds and ends it as
`failed`, with its event, so a user watching it sees it end without anyone asking for a new
one; the next request for a job of its kind would also end it, and starts a new one.

A kind's table has `id`, `status` (`running` until it ends), `heartbeat_at`, `finished_at`
and `reason` (why it did not succeed; never personal data).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral import apart
from referral.audit.chain import AuditKeys, pending_event, stage_pending, track
from referral.audit.sealer import Sealer
from referral.errors import Conflict
from referral.models.base import utcnow

logger = logging.getLogger("referral.jobs")

HEARTBEAT_SECONDS = 2.0
# A running job whose heartbeat is older than this has lost its worker.
STALE_AFTER = timedelta(seconds=30)
# How often each worker looks for a job whose worker died, from start-up to shutdown.
WATCH_SECONDS = 10.0

# How a job ends, in a transaction of its own: it sets the row's outcome (with `end`) and
# writes whatever the job made. The row is locked and still `running`.
Finish = Callable[[AsyncSession, Any], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    """One kind of job: its table, what a user calls one, and how the trail records its end."""

    model: type[SQLModel]
    noun: str  # in the reasons a user reads: "the walk could not finish"
    result_action: str  # the event that records how a job ended
    # further resource ids of the end's event, from the ended row (what the job made)
    made: Callable[[Any], list[str]] = field(default=lambda _job: [])

    @property
    def stopped(self) -> str:
        return f"the server running the {self.noun} stopped before it finished; ask for a new one"

    def result_event(self, job: Any, status: str):
        """How a job ended, in the trail itself: the server's act, on a user's request. A
        job that could not finish is an error; one that did its work is not, whatever it
        found."""
        return pending_event(
            actor_user_id=None,
            actor_role=None,
            actor_organisation_id=None,
            actor_municipality_id=None,
            action=self.result_action,
            resource_type=self.model.__tablename__,
            resource_ids=[str(job.id), *self.made(job)],
            outcome="error" if status == "failed" else "allowed",
            status_code=None,
            request_id=None,
            client_address=None,
            purpose=status,
            fields=[],
        )


def end(job: Any, *, status: str, reason: str | None = None) -> None:
    job.status, job.reason = status, reason
    job.finished_at = job.heartbeat_at = utcnow()


def ending(status: str, reason: str | None) -> Finish:
    """A finish that only records the outcome: the job made nothing."""

    async def finish(_session: AsyncSession, job: Any) -> None:
        end(job, status=status, reason=reason)

    return finish


async def running(session: AsyncSession, kind: Kind) -> Any | None:
    model = kind.model
    return (await session.exec(select(model).where(col(model.status) == "running"))).first()


async def claim(
    session: AsyncSession, kind: Kind, new: Any, join: Callable[[Any], Any]
) -> tuple[Any, bool]:
    """The job of `kind` running now, or `new`: (the job, whether this call started it).
    `join` hands back the running job for this request, or raises if the request asks for
    something else than it does."""
    current = await running(session, kind)
    if current is not None:
        if not _stale(current):
            return join(current), False
        await _end_stale(session, kind, current)
    try:
        async with session.begin_nested():
            session.add(new)
    except IntegrityError:  # another worker started one since we looked: join it
        current = await running(session, kind)
        if current is None:  # and it has ended already: too close a race to settle here
            raise Conflict(f"A {kind.noun} ended as this one was asked for; ask again.") from None
        return join(current), False
    return new, True


def _stale(job: Any) -> bool:
    return utcnow() - job.heartbeat_at >= STALE_AFTER


async def _end_stale(session: AsyncSession, kind: Kind, stale: Any) -> None:
    """End a job whose worker died as `failed`, with its event, like any other job. Only if
    it is still as it was read: of two workers that both found it stale, one ends it and
    records that once."""
    model, now = kind.model, utcnow()
    ended = await session.exec(
        update(model)
        .where(
            col(model.id) == stale.id,
            col(model.status) == "running",
            col(model.heartbeat_at) == stale.heartbeat_at,
        )
        .values(status="failed", reason=kind.stopped, finished_at=now, heartbeat_at=now)
    )
    if ended.rowcount == 1:
        track(session, kind.result_event(stale, "failed"))


class Runner:
    """Runs the jobs of one kind that this process started, each as a task of its own."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        sealer: Sealer,
        keys: AuditKeys,
        kind: Kind,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._sealer = sealer
        self._keys = keys
        self.kind = kind
        self._tasks: set[asyncio.Task[None]] = set()
        self._watching: asyncio.Task[None] | None = None

    def start(
        self,
        job_id: uuid.UUID,
        work: Callable[[], Awaitable[Finish]],
        progress: Callable[[], dict] = dict,
    ) -> None:
        """Run `work` for the job whose row the request has committed; return at once.
        `work` does the job and hands back how it ends; `progress` is what each heartbeat
        writes beside its time."""
        task = asyncio.create_task(self._run(job_id, work, progress))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def watch(self) -> None:
        """From start-up: end, every WATCH_SECONDS, a job of this kind whose worker died."""
        if self._watching is None or self._watching.done():
            self._watching = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                await self.end_stale()
            except Exception:  # the database is away: the next look tries again
                logger.warning("could not look for a stale %s", self.kind.noun, exc_info=True)
            await asyncio.sleep(WATCH_SECONDS)

    async def end_stale(self) -> None:
        """End the running job of this kind if its worker died, and chain its event."""
        async with self._sessionmaker() as session, session.begin():
            current = await running(session, self.kind)
            if current is None or not _stale(current):
                return
            await _end_stale(session, self.kind, current)
            staged = await stage_pending(session, self._keys)  # none if another worker did
        if staged:
            await self._sealer.sealed()

    async def finished(self) -> None:
        """At shutdown: stop looking for stale jobs, and stop the jobs in progress; each is
        recorded as `failed` (stopped)."""
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.wait([self._watching])
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _run(self, job_id, work, progress) -> None:
        beating = asyncio.create_task(self._heartbeat(job_id, progress))
        try:
            finish = await work()
        except asyncio.CancelledError:
            await self._finish(job_id, ending("failed", self.kind.stopped))
            raise
        except apart.ApartError as exc:
            logger.warning(
                "the process of the %s %s gave no answer: %s", self.kind.noun, job_id, exc
            )
            reason = f"the {self.kind.noun}'s process {exc}; ask for a new one"
            await self._finish(job_id, ending("failed", reason))
        except Exception as exc:
            logger.exception("the %s %s could not finish", self.kind.noun, job_id)
            await self._finish(job_id, ending("failed", self._could_not_finish(exc)))
        else:
            await self._finish(job_id, finish)
        finally:
            beating.cancel()

    def _could_not_finish(self, exc: Exception) -> str:
        return f"the {self.kind.noun} could not finish ({type(exc).__name__}); ask for a new one"

    async def _heartbeat(self, job_id: uuid.UUID, progress: Callable[[], dict]) -> None:
        model = self.kind.model
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self._sessionmaker() as session, session.begin():
                    await session.exec(
                        update(model)
                        .where(col(model.id) == job_id, col(model.status) == "running")
                        .values(heartbeat_at=utcnow(), **progress())
                    )
            except Exception:  # the next beat tries again; a job that cannot beat goes stale
                logger.warning(
                    "could not write the heartbeat of %s %s", self.kind.noun, job_id, exc_info=True
                )

    async def _finish(self, job_id: uuid.UUID, finish: Finish) -> None:
        """Record how the job ended, with its event, in one transaction. If writing what the
        job made fails, the job is recorded as failed instead; if even that fails, the row
        stays `running` until its heartbeat goes stale."""
        try:
            await self._end(job_id, finish)
        except Exception as exc:
            logger.exception("could not record the end of the %s %s", self.kind.noun, job_id)
            try:
                await self._end(job_id, ending("failed", self._could_not_finish(exc)))
            except Exception:
                logger.exception("could not record the %s %s as failed", self.kind.noun, job_id)
                return
        await self._sealer.sealed()

    async def _end(self, job_id: uuid.UUID, finish: Finish) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(self.kind.model, job_id, with_for_update=True)
            if job is None or job.status != "running":
                return  # ended as stale by a request meanwhile
            await finish(session, job)
            session.add(job)
            track(session, self.kind.result_event(job, job.status))
            await stage_pending(session, self._keys)
