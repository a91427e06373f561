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
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from referral import apart, jobs
from referral.audit.chain import Checkpoint, Verification, verify
from referral.audit.sealer import Sealer
from referral.config import Settings
from referral.errors import Conflict
from referral.models import AuditVerification

WALKS = jobs.Kind(model=AuditVerification, noun="walk", result_action="audit.verify_result")


async def claim(
    session: AsyncSession, requested_by: uuid.UUID, checkpoint: Checkpoint | None = None
) -> tuple[AuditVerification, bool]:
    """The walk running now, or a new one: (the walk, whether this call started it). A walk
    asked for against a checkpoint joins only a walk against the same one."""
    walk = AuditVerification(requested_by=requested_by)
    if checkpoint is not None:
        walk.checkpoint_seq, walk.checkpoint_hash = checkpoint.seq, checkpoint.hash
    return await jobs.claim(session, WALKS, walk, lambda running: _joined(running, checkpoint))


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


def _record_result(walk: AuditVerification, result: Verification) -> None:
    walk.checked, walk.unchained, walk.staged = result.checked, result.unchained, result.staged
    walk.head_seq, walk.head_hash = result.head_seq, result.head_hash
    walk.first_broken = result.first_broken
    jobs.end(walk, status="ok" if result.ok else "broken", reason=result.reason)


async def _walk_apart(
    settings: Settings, checkpoint: Checkpoint | None, progress: Callable[[int], None]
) -> Verification:
    """The walk, in a process of its own: at national scale minutes of hashing, which on
    the worker's event loop would slow every other request the worker serves (ADR 0027)."""
    return await apart.run(
        _walk_in_this_process, settings, checkpoint, name="referral-walk", progress=progress
    )


def _walk_in_this_process(settings: Settings, checkpoint: Checkpoint | None) -> Verification:
    """The walk's process: its own engine, one snapshot of the trail (`verify`)."""
    from referral.db import create_engine, create_sessionmaker

    async def walk() -> Verification:
        engine = create_engine(settings, batch=True)
        try:
            async with create_sessionmaker(engine)() as session:
                return await verify(
                    session, settings.audit_chain_keys, checkpoint, progress=apart.report
                )
        finally:
            await engine.dispose()

    return asyncio.run(walk())


class Verifier:
    """Runs the walks this process started, each as a task of its own."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], sealer: Sealer, settings: Settings
    ) -> None:
        self._sealer = sealer
        self._settings = settings
        self.runner = jobs.Runner(sessionmaker, sealer, settings.audit_chain_keys, WALKS)

    async def start(self, walk_id: uuid.UUID, checkpoint: Checkpoint | None = None) -> None:
        """Start the walk whose row the request has committed; return at once. (A coroutine
        so that a request's background runs it on the event loop, not in a thread.)"""
        checked = [0]

        def add(events: int) -> None:
            checked[0] += events

        async def walk() -> jobs.Finish:
            await self._sealer.sealed()  # anything left staged is chained first
            result = await _walk_apart(self._settings, checkpoint, add)

            async def record(_session: AsyncSession, row: AuditVerification) -> None:
                _record_result(row, result)

            return record

        self.runner.start(walk_id, walk, lambda: {"checked": checked[0]})

    async def finished(self) -> None:
        """At shutdown: stop the walks in progress; each is recorded as `failed` (stopped)."""
        await self.runner.finished()
