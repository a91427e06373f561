"""Walks of the whole trail, run by the server and kept as rows (ADR 0024).

At national scale a walk reads tens of millions of events: minutes, longer than any proxy
waits for an answer. So an auditor's request only starts a walk (or joins the one running)
and is answered at once; the walk runs in the server, writes its progress as it goes, and
leaves its result in `audit_verification` for the auditor to read.

One walk at a time, across every worker: the partial unique index admits one `running` row.
A walk whose worker died stops writing its heartbeat; the next request for a walk ends it
as `failed` and starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.audit.chain import (
    AuditKeys,
    Checkpoint,
    Verification,
    pending_event,
    stage_pending,
    track,
    verify,
)
from referral.audit.sealer import Sealer
from referral.errors import Conflict
from referral.models import AuditVerification
from referral.models.base import utcnow

logger = logging.getLogger("referral.audit")

HEARTBEAT_SECONDS = 2.0
# A running walk whose heartbeat is older than this has lost its worker.
STALE_AFTER = timedelta(seconds=30)
STOPPED = "the server running the walk stopped before it finished; ask for a new one"


async def _running(session: AsyncSession) -> AuditVerification | None:
    statement = select(AuditVerification).where(AuditVerification.status == "running")
    return (await session.exec(statement)).first()


async def claim(
    session: AsyncSession, requested_by: uuid.UUID, checkpoint: Checkpoint | None = None
) -> tuple[AuditVerification, bool]:
    """The walk running now, or a new one: (the walk, whether this call started it). A walk
    asked for against a checkpoint joins only a walk against the same one."""
    running = await _running(session)
    if running is not None:
        if utcnow() - running.heartbeat_at < STALE_AFTER:
            return _joined(running, checkpoint), False
        await _end_stale(session, running)
    walk = AuditVerification(requested_by=requested_by)
    if checkpoint is not None:
        walk.checkpoint_seq, walk.checkpoint_hash = checkpoint.seq, checkpoint.hash
    try:
        async with session.begin_nested():
            session.add(walk)
    except IntegrityError:  # another worker started one since we looked: join it
        running = await _running(session)
        if running is None:  # and it has ended already: too close a race to settle here
            raise Conflict(
                "A walk of the trail ended as this one was asked for; ask again."
            ) from None
        return _joined(running, checkpoint), False
    return walk, True


async def _end_stale(session: AsyncSession, stale: AuditVerification) -> None:
    """End a walk whose worker died as `failed`, with its `audit.verify_result` event, like
    any other walk. Only if it is still as it was read: of two requests that both found it
    stale, one ends it and records that once."""
    now = utcnow()
    ended = await session.exec(
        update(AuditVerification)
        .where(
            col(AuditVerification.id) == stale.id,
            col(AuditVerification.status) == "running",
            col(AuditVerification.heartbeat_at) == stale.heartbeat_at,
        )
        .values(status="failed", reason=STOPPED, finished_at=now, heartbeat_at=now)
    )
    if ended.rowcount == 1:
        track(session, _result_event(stale.id, "failed"))


def _joined(running: AuditVerification, checkpoint: Checkpoint | None) -> AuditVerification:
    if checkpoint is not None and (running.checkpoint_seq, running.checkpoint_hash) != (
        checkpoint.seq,
        checkpoint.hash,
    ):
        raise Conflict(
            "A walk of the trail against another checkpoint, or none, is running; ask again "
            "once it has finished."
        )
    return running


def _end(walk: AuditVerification, *, status: str, reason: str | None) -> None:
    walk.status, walk.reason = status, reason
    walk.finished_at = walk.heartbeat_at = utcnow()


def _record_result(walk: AuditVerification, result: Verification) -> None:
    walk.checked, walk.unchained, walk.staged = result.checked, result.unchained, result.staged
    walk.head_seq, walk.head_hash = result.head_seq, result.head_hash
    walk.first_broken = result.first_broken
    _end(walk, status="ok" if result.ok else "broken", reason=result.reason)


class Verifier:
    """Runs the walks this process started, each as a task of its own."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], sealer: Sealer, keys: AuditKeys
    ) -> None:
        self._sessionmaker = sessionmaker
        self._sealer = sealer
        self._keys = keys
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, walk_id: uuid.UUID, checkpoint: Checkpoint | None = None) -> None:
        """Start the walk whose row the request has committed; return at once. (A coroutine
        so that a request's background runs it on the event loop, not in a thread.)"""
        task = asyncio.create_task(self._walk(walk_id, checkpoint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finished(self) -> None:
        """At shutdown: stop the walks in progress; each is recorded as `failed` (stopped)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _walk(self, walk_id: uuid.UUID, checkpoint: Checkpoint | None) -> None:
        checked = [0]
        beating = asyncio.create_task(self._heartbeat(walk_id, checked))
        try:
            await self._sealer.sealed()  # anything left staged is chained first
            async with self._sessionmaker() as session:  # verify begins its own snapshot
                result = await verify(session, self._keys, checkpoint, progress=_counter(checked))
        except asyncio.CancelledError:
            await self._finish(walk_id, lambda walk: _end(walk, status="failed", reason=STOPPED))
            raise
        except Exception as exc:
            logger.exception("the walk of the audit trail %s could not finish", walk_id)
            reason = f"the walk could not finish ({type(exc).__name__}); ask for a new one"
            await self._finish(walk_id, lambda walk: _end(walk, status="failed", reason=reason))
        else:
            await self._finish(walk_id, lambda walk: _record_result(walk, result))
        finally:
            beating.cancel()

    async def _heartbeat(self, walk_id: uuid.UUID, checked: list[int]) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                async with self._sessionmaker() as session, session.begin():
                    await session.exec(
                        update(AuditVerification)
                        .where(
                            col(AuditVerification.id) == walk_id,
                            col(AuditVerification.status) == "running",
                        )
                        .values(heartbeat_at=utcnow(), checked=checked[0])
                    )
            except Exception:  # the next beat tries again; a walk that cannot beat goes stale
                logger.warning("could not write the heartbeat of walk %s", walk_id, exc_info=True)

    async def _finish(self, walk_id: uuid.UUID, outcome) -> None:
        """Record how the walk ended, with its audit event, in one transaction. If even that
        fails, the row stays `running` until its heartbeat goes stale."""
        try:
            async with self._sessionmaker() as session, session.begin():
                walk = await session.get(AuditVerification, walk_id, with_for_update=True)
                if walk is None or walk.status != "running":
                    return  # ended as stale by a request meanwhile
                outcome(walk)
                session.add(walk)
                track(session, _result_event(walk.id, walk.status))
                await stage_pending(session, self._keys)
        except Exception:
            logger.exception("could not record the end of the walk of the audit trail %s", walk_id)
            return
        await self._sealer.sealed()


def _counter(checked: list[int]):
    def add(events: int) -> None:
        checked[0] += events

    return add


def _result_event(walk_id: uuid.UUID, status: str):
    """How a walk ended, in the trail itself: the server's act, on the auditor's request."""
    return pending_event(
        actor_user_id=None,
        actor_role=None,
        actor_organisation_id=None,
        actor_municipality_id=None,
        action="audit.verify_result",
        resource_type="audit_verification",
        resource_ids=[str(walk_id)],
        # a walk that found the trail broken did its work; one that could not finish did not
        outcome="error" if status == "failed" else "allowed",
        status_code=None,
        request_id=None,
        client_address=None,
        purpose=status,
        fields=[],
    )
