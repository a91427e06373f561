"""Group commit for the audit chain (ADR 0014).

A request commits its events to `audit_staged` with its change, then waits here. One round
at a time chains every staged event under the head row's lock; the requests that arrived
meanwhile are served by the next round together. The head is locked once per round instead
of once per request, and never while a request's own transaction is open.

A request that changed nothing (a read) need not stage its event: it hands the event to
`chained`, and the next round writes it straight into the trail with the staged ones (ADR
0031). Its answer waits for that round's commit and is never sent without it. A request may
hand over its change with its event: the round makes the change in its own transaction, and
writes the event only if the change was made (ADR 0032).

A round that fails (the database is gone) leaves the events staged. Rounds are then tried
again, less and less often, until one succeeds, whether or not a request is waiting: events
staged during an outage are chained once the database is back, not at the next request.
The events a failed round was handed are not kept: their requests are refused instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from referral.audit.chain import AuditKeys, Head, check_recordable, seal_staged
from referral.db import database_unavailable, unavailable_error
from referral.errors import ServiceUnavailable

logger = logging.getLogger("referral.audit")

# What the capture of a request's statements (bench/run.py) leaves out: the round's
# statements belong to many requests at once.
SEALER_OPTION = "audit_sealer"
_AFTER_A_FAILURE = 0.2  # seconds before a database that just failed is asked again
_RETRY_AT_MOST = 30.0  # seconds between tries while no request waits
# A round that only held events wait for reads the staged ones too if none has for this
# long: what a process that died left staged is chained within it (ADR 0031).
_STAGED_AT_LEAST_EVERY = 1.0
# The answer of a held event that no round committed in time (`Sealer._late`).
_LATE = TimeoutError("the audit event was not chained in time")


class Condition(Hashable, Protocol):
    """What a held event is chained under: checked once per round for all the events that
    share it (equal conditions), in the round's transaction, before the head is locked.

    A condition may itself be the change its event records (`changes` true, ADR 0032): it
    commits with the event or not at all, and its request is answered with what the round
    did, even after `wait_seconds`. Conditions with the same `batch` are asked together, by
    their type's `all_hold(connection, conditions)`."""

    async def holds(self, connection: Any) -> bool: ...


class _ConditionFailed(Exception):
    """A condition, or a batch of them checked together, raised in a round: that round is
    rolled back."""

    def __init__(self, conditions: tuple[Condition, ...]) -> None:
        # named by its type alone: a change's values are a person's data
        name = type(conditions[0]).__name__
        super().__init__(f"an audit condition failed: {len(conditions)} {name}")
        self.conditions = conditions


@dataclass(eq=False)
class _Held:
    """An event handed to the next round, and what its request awaits: the round's failure,
    or whether the event was written (False: its condition did not hold)."""

    event: Any
    where: Condition | None
    answer: asyncio.Future[Exception | bool]


class Sealer:
    def __init__(self, engine: AsyncEngine, keys: AuditKeys, wait_seconds: float) -> None:
        self._engine = engine
        self._keys = keys
        self._wait_seconds = wait_seconds
        self._waiting: list[asyncio.Future[None]] = []
        self._held: list[_Held] = []  # events handed to the next round
        self._rounds: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None  # ends a pause between tries
        self._closing = False
        self._moved = False  # whether a round has moved the chain to this process's key
        self._staged_read_at = float("-inf")  # when a round last chained what was staged
        self._alone: set[Any] = set()  # conditions of a failed batch, to be checked alone
        # Where the last round left the chain's head, on PostgreSQL (ADR 0033); None when
        # unknown, after a failure, or on SQLite, where every round reads it under its lock.
        self._head: Head | None = None
        # Whether the last round that read the head under its lock found it where the round
        # before had left it: no other process is chaining, so the next can write after it.
        self._undisturbed = False
        self._knows_head = engine.dialect.name == "postgresql"

    async def sealed(self) -> None:
        """Return once every event committed before this call is chained.

        If that takes longer than `wait_seconds` (the database is gone, or the head is held),
        return anyway: the events are committed and MAC'd in `audit_staged`, and the next
        round chains them. A request that changed data is never answered as failed after its
        change committed."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        self._wake()
        self.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), self._wait_seconds)
        except TimeoutError:
            logger.warning("audit events are staged but not yet chained; a later round will")

    async def chained(self, event: Any, where: Condition | None = None) -> bool:
        """Return once `event`, held here and never staged, is committed in the chain: True.
        With `where`, the event is written only if the condition holds when its round runs;
        False, with nothing written, if it does not.

        For the event of a request that changed nothing, or whose change is the condition
        (ADR 0032): its answer waits here and is sent only if this returns True. If the
        round fails, this raises: 503 if the database cannot serve, else the fault itself (a
        500). If no round has committed it within `wait_seconds`, 503; an event a round had
        already taken may still be written then, recording a read that was refused: the
        trail over-records, never under-records. A change a round has taken is waited for
        instead, and answered with what that round did."""
        check_recordable(event)
        loop = asyncio.get_running_loop()  # once: each lookup asks the OS for the pid
        held = _Held(event, where, loop.create_future())
        self._held.append(held)
        self._wake()
        self.start()
        # A timer, not wait_for(shield(...)): that was two more futures and their callbacks
        # on every audited request. If the request itself is cancelled, so is `held.answer`,
        # and the round, which answers only what is not done, still writes the event.
        late = loop.call_later(self._wait_seconds, self._late, held)
        try:
            answer = await held.answer
        finally:
            late.cancel()
        if answer is _LATE:
            logger.warning("an audit event was not chained in time; its request is refused")
            raise ServiceUnavailable(
                "The audit trail is busy; try again shortly.", headers={"Retry-After": "2"}
            )
        if isinstance(answer, bool):
            return answer
        if database_unavailable(answer):
            raise unavailable_error(answer) from answer
        raise RuntimeError("the audit event could not be chained") from answer

    def _late(self, held: _Held) -> None:
        """`wait_seconds` have passed with no round committing `held`: refused (503), and
        taken out of the next round if no round has taken it. An event a round has already
        taken may still be written, recording a read that was refused: the trail
        over-records, never under-records. A change a round has taken is waited for
        instead, and answered with what that round did (its statements have their own
        deadline)."""
        if held.answer.done():
            return
        taken = held not in self._held
        if taken and getattr(held.where, "changes", False):
            return
        if not taken:
            self._held.remove(held)
        held.answer.set_result(_LATE)

    def start(self) -> None:
        """Run rounds until no one is waiting and the last round succeeded (also on startup,
        for events left staged)."""
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._run())

    async def finished(self) -> None:
        """Wait for a round in progress, and try no more (at shutdown, before the engine
        goes). What is still staged is chained by the next process's first round."""
        self._closing = True
        self._wake()
        if self._rounds is not None:
            await asyncio.wait([self._rounds])
        held, self._held = self._held, []
        for each in held:
            if not each.answer.done():  # its request may have been cancelled
                each.answer.set_result(RuntimeError("the sealer has stopped"))

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        failures = 0
        while True:
            waiting, self._waiting = self._waiting, []
            held, self._held = self._held, []
            failure, written = await self._round(held, staged=self._reads_staged(waiting, held))
            if isinstance(failure, _ConditionFailed) and not database_unavailable(failure):
                # a request's condition failed, not the database: refuse that request, and
                # run the round again at once for the others, whose work was rolled back. A
                # batch that failed is checked one by one, to find whose it was.
                if len(failure.conditions) > 1:
                    self._alone.update(failure.conditions)
                else:
                    held = self._refused(held, failure)
                    self._alone.difference_update(failure.conditions)
                self._waiting, self._held = waiting + self._waiting, held + self._held
                continue
            self._alone.difference_update(each.where for each in held)
            for done in waiting:
                if not done.done():
                    done.set_result(None)
            for each in held:
                if not each.answer.done():
                    each.answer.set_result(failure if failure is not None else each in written)
            failed = failure is not None
            failures = failures + 1 if failed else 0
            if not failed and not self._expected():
                return
            if failed:  # a database that just failed is not asked again at once
                await asyncio.sleep(_AFTER_A_FAILURE)
                if not self._expected() and not self._closing:
                    await self._pause(min(_RETRY_AT_MOST, _AFTER_A_FAILURE * 2 ** min(failures, 8)))
            if self._closing and not self._expected():
                return

    @staticmethod
    def _refused(held: list[_Held], failure: _ConditionFailed) -> list[_Held]:
        """Answer the held events under the failed condition with its fault; the others."""
        fault = failure.__cause__ if isinstance(failure.__cause__, Exception) else failure
        others = []
        for each in held:
            if each.where in failure.conditions:
                if not each.answer.done():  # its request may have been cancelled
                    each.answer.set_result(fault)
            else:
                others.append(each)
        return others

    def _reads_staged(self, waiting: list[asyncio.Future[None]], held: list[_Held]) -> bool:
        """Whether a round reads the staged events: when a request that staged waits for it,
        when there is nothing else to do, and at least every _STAGED_AT_LEAST_EVERY
        seconds. A round for reads alone saves a round trip to the database."""
        overdue = time.monotonic() - self._staged_read_at > _STAGED_AT_LEAST_EVERY
        return bool(waiting) or not held or overdue

    def _expected(self) -> bool:
        """Whether a request awaits a round."""
        return bool(self._waiting or self._held)

    async def _pause(self, seconds: float) -> None:
        """Until the next try: `seconds`, or less if a request comes to wait or we close."""
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait([self._wakeup], timeout=seconds)
        finally:
            self._wakeup = None

    async def _round(
        self, held: list[_Held], *, staged: bool = True
    ) -> tuple[Exception | None, set[_Held]]:
        """Chain what is staged (if `staged`), then those of `held` whose condition holds, in
        one transaction: its failure or None, and the held events it wrote.

        A round of held events alone, none of them a change, needs no transaction once the
        sealer knows where the head is (ADR 0033): their conditions are asked, and the events
        written after the head by one statement, only if the head is still there. If another
        process moved it meanwhile, nothing was written, and the round is run in a
        transaction, under the head's lock. Rounds then lock the head until one finds it
        where the round before it left it: while other processes are chaining too, a write
        after the known head would mostly write nothing."""
        known = self._head  # where the last round left the head (set only once it has moved)
        trusted = known is not None and self._undisturbed and not staged
        if trusted and not any(getattr(each.where, "changes", False) for each in held):
            failure, written, missed = await self._attempt(
                held, known, known, staged=False, alone=True
            )
            if not missed:
                return failure, written
            trusted = False
        after = known if trusted else None
        failure, written, _ = await self._attempt(held, after, known, staged=staged, alone=False)
        return failure, written

    async def _attempt(
        self,
        held: list[_Held],
        after: Head | None,
        known: Head | None,
        *,
        staged: bool,
        alone: bool,
    ) -> tuple[Exception | None, set[_Held], bool]:
        """A round in a transaction, or `alone`: a statement at a time, in autocommit, with
        `after`. Its failure or None, the held events it wrote, and whether `after` was
        missed (only `alone`: in a transaction, the head is then locked and read instead).
        `known`: where the last round left the head, to tell whether another moved it."""
        started = time.monotonic()
        try:
            async with self._connection(alone) as connection:
                written = await _holding(connection, held, self._alone)
                events = [each.event for each in held if each in written]
                seal = partial(seal_staged, connection, self._keys, move=not self._moved)
                outcome = await seal(held=events, staged=staged, after=after)
                if outcome.missed and not alone:
                    outcome = await seal(held=events, staged=staged)
        except Exception as exc:
            self._head, self._undisturbed = None, False  # the head is read under its lock again
            logger.exception(
                "could not chain the audit events; the staged stay staged, and the %d held "
                "are refused with their requests",
                len(held),
            )
            return exc, set(), False
        self._moved = True
        self._head = outcome.head if self._knows_head else None
        if outcome.missed:
            self._undisturbed = False
            return None, set(), True
        if outcome.found is not None:  # read under the lock: had anyone moved it since?
            self._undisturbed = known is not None and outcome.found == known
        if staged:
            self._staged_read_at = started
        if outcome.refused:
            logger.error(
                "staged audit events %s do not carry the audit key's MAC: written outside "
                "the application; left in place for the auditor",
                outcome.refused[:20],
            )
        return None, written, False

    @asynccontextmanager
    async def _connection(self, autocommit: bool) -> AsyncIterator[AsyncConnection]:
        """The round's connection: in a transaction that commits at the end, or autocommit."""
        if autocommit:
            # checked out and set in one greenlet rather than two (ADR 0038)
            connection = AsyncConnection(
                self._engine, await greenlet_spawn(self._in_autocommit, self._engine.sync_engine)
            )
            try:
                yield connection
            finally:
                await connection.close()
        else:
            async with self._engine.begin() as connection:
                yield await connection.execution_options(**{SEALER_OPTION: True})

    @staticmethod
    def _in_autocommit(engine: Any) -> Any:
        connection = engine.connect()
        try:
            return connection.execution_options(
                isolation_level="AUTOCOMMIT", **{SEALER_OPTION: True}
            )
        except BaseException:
            connection.close()
            raise


async def _holding(connection: Any, held: list[_Held], alone: set[Any]) -> set[_Held]:
    """The held events whose condition holds now (or that have none), each distinct
    condition checked once. Conditions of one `batch` are checked together by their type's
    `all_hold`, unless they are to be checked `alone` (a batch of them failed)."""
    verdicts: dict[Condition, bool] = {}
    batches: dict[Any, list[Any]] = {}
    for condition in dict.fromkeys(each.where for each in held if each.where is not None):
        key = getattr(condition, "batch", None)
        if key is None or condition in alone:
            batches[("alone", id(condition))] = [condition]
        else:
            batches.setdefault(key, []).append(condition)
    for batch in batches.values():
        try:
            if len(batch) == 1:
                answers = [await batch[0].holds(connection)]
            else:
                answers = await type(batch[0]).all_hold(connection, batch)
        except Exception as exc:
            raise _ConditionFailed(tuple(batch)) from exc
        verdicts.update(zip(batch, answers, strict=True))
    return {each for each in held if each.where is None or verdicts[each.where]}
