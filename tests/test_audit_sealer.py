"""Staged events and the sealer (ADR 0014): a request commits its events with its change and
is answered once they are chained; what a failed round leaves staged is chained by the next;
a staged row not written with the audit key is never chained and fails verification.

Held events (ADR 0031): a request that changed nothing hands its event to the sealer, which
writes it into the chain with the staged ones; the request goes on only once that round has
committed, and is refused (never answered) when the round fails or does not end in time."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from referral.audit import chain
from referral.audit.sealer import Sealer
from referral.errors import ServiceUnavailable
from referral.models import AuditEvent, audit_staged
from tests.helpers import counting, scratch_app, synthetic_event, tamper, unusual_events

EVENTS = 4


@pytest.fixture
async def trail(settings, tmp_path):
    async with scratch_app(settings, tmp_path, "sealer") as (app, client, _, database):
        for _ in range(EVENTS):
            await _denied(client)
        yield app, client, database


async def _denied(client) -> None:
    """An audited request: a denied one, written in its own transaction."""
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def _verify(app) -> chain.Verification:
    async with app.state.sessionmaker() as session:
        return await chain.verify(session, app.state.audit_keys, batch=3)


async def _staged_ids(app) -> list[int]:
    async with app.state.engine.connect() as connection:
        rows = await connection.execute(select(audit_staged.c.id).order_by(audit_staged.c.id))
        return list(rows.scalars())


@pytest.fixture
def failing_rounds(monkeypatch):
    """Every sealer round fails, as if the database went away just after the commit."""

    async def broken(connection, key, batch=2_000, **_):
        raise ConnectionError("the database went away")

    monkeypatch.setattr("referral.audit.sealer.seal_staged", broken)
    return monkeypatch


async def test_a_request_is_answered_with_its_events_already_chained(trail):
    app, client, _ = trail
    await _denied(client)
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 1, 0), result.reason


async def test_a_failed_round_leaves_the_events_staged_and_the_next_round_chains_them(
    trail, failing_rounds
):
    app, client, _ = trail
    await _denied(client)  # still answered as it should be: the event is committed
    assert len(await _staged_ids(app)) == 1
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS, 1), result.reason

    failing_rounds.undo()
    await _denied(client)
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 2, 0), result.reason


async def test_events_staged_in_an_outage_are_chained_once_the_database_is_back(
    trail, failing_rounds
):
    app, client, _ = trail
    await _denied(client)  # its round fails: the event stays staged
    assert len(await _staged_ids(app)) == 1
    failing_rounds.undo()  # the database is back, and no request comes
    for _ in range(100):
        if not await _staged_ids(app):
            break
        await asyncio.sleep(0.1)
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 1, 0), result.reason


async def test_shutting_down_does_not_wait_for_a_database_that_is_gone(trail, failing_rounds):
    app, client, _ = trail
    await _denied(client)
    await asyncio.wait_for(app.state.sealer.finished(), timeout=2)
    assert len(await _staged_ids(app)) == 1  # for the next process's first round


async def test_a_staged_event_edited_before_it_is_chained_is_refused(trail, failing_rounds):
    app, client, database = trail
    await _denied(client)
    (edited,) = await _staged_ids(app)
    await tamper(
        database, "audit_staged", f"UPDATE audit_staged SET action = 'auth.me' WHERE id = {edited}"
    )
    failing_rounds.undo()

    await _denied(client)  # its round chains this request's event and refuses the edited one
    assert await _staged_ids(app) == [edited]
    result = await _verify(app)
    assert not result.ok
    assert result.checked == EVENTS + 1
    assert f"staged event {edited}" in result.reason


async def test_a_staged_event_written_without_the_key_is_never_chained(trail):
    app, client, database = trail
    forged = (
        "INSERT INTO audit_staged (id, occurred_at, action, resource_ids, outcome, fields, mac) "
        "VALUES (99, '2026-11-21 10:00:00+00:00', 'case.read', '[]', 'allowed', '[]', "
        f"'{'0' * 64}')"
    )
    await tamper(database, "audit_staged", forged)
    await _denied(client)
    assert await _staged_ids(app) == [99]
    async with app.state.sessionmaker() as session:
        chained = await session.scalar(select(func.count()).select_from(AuditEvent))
    assert chained == EVENTS + 1
    result = await _verify(app)
    assert not result.ok
    assert "staged event 99" in result.reason


async def test_a_staged_event_cannot_be_changed_by_the_application_user(trail, failing_rounds):
    app, client, _ = trail
    await _denied(client)
    async with app.state.engine.connect() as connection:
        with pytest.raises(DBAPIError) as info:
            await connection.execute(text("UPDATE audit_staged SET action = 'auth.me'"))
        assert "never changed" in str(info.value)
        await connection.rollback()


async def test_events_the_database_renders_differently_are_chained_on_their_values(trail):
    """On PostgreSQL a round reads each staged event as text the database renders; where that
    text is not the event's canonical form, the event is checked on its values and chained
    all the same, with the values it was staged with."""
    app, client, database = trail
    async with app.state.sessionmaker() as session, session.begin():
        for event in unusual_events():
            chain.track(session, event)
        await chain.stage_pending(session, app.state.audit_keys)
    await _denied(client)  # its round chains the three and this request's event
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 4, 0), result.reason
    # verification renders them differently too, so it checks them again on their values
    assert result.rechecked == (3 if database.is_postgres else 0)
    async with app.state.sessionmaker() as session:
        purposes = (
            await session.exec(
                select(AuditEvent.purpose).where(AuditEvent.action == "test.unusual")
            )
        ).all()
    assert sorted(purposes) == sorted(event.purpose for event in unusual_events())


@pytest.mark.postgres_only
async def test_a_round_that_moves_fewer_events_than_it_chained_is_rolled_back(
    trail, failing_rounds
):
    """The move into the trail carries only the events' links. If a staged row is gone by
    then, the trail would have a gap the head skips over; the round fails instead."""
    app, client, _ = trail
    await _denied(client)
    (staged_id,) = await _staged_ids(app)
    async with app.state.engine.connect() as connection:
        staged = chain._staged_events(connection, app.state.audit_keys)
        links = [
            (staged_id, EVENTS + 1, "0" * 64, "1" * 64),
            (staged_id + 1000, EVENTS + 2, "1" * 64, "2" * 64),
        ]
        with pytest.raises(RuntimeError, match="2 staged events were chained, 1 moved"):
            await staged.move(links)
        await connection.rollback()
    assert await _staged_ids(app) == [staged_id]
    failing_rounds.undo()
    await _denied(client)
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 2, 0), result.reason


# --- held events (ADR 0031) ------------------------------------------------------------------


def _read_event() -> SimpleNamespace:
    """The event of a read, as a lean answer hands it to the sealer."""
    return synthetic_event(
        action="case.read",
        resource_type="case",
        resource_ids=[str(uuid.uuid4())],
        request_id=uuid.uuid4().hex,
        fields=["id", "state"],
    )


async def _chained_request_ids(app) -> set[str]:
    async with app.state.sessionmaker() as session:
        return set((await session.exec(select(AuditEvent.request_id))).all())


async def test_held_events_are_chained_with_the_staged_ones(trail):
    app, client, _ = trail
    held = [_read_event() for _ in range(5)]
    # requests that stage and requests that hand over their events, at once
    await asyncio.gather(
        *(app.state.sealer.chained(event) for event in held), _denied(client), _denied(client)
    )
    assert {event.request_id for event in held} <= await _chained_request_ids(app)
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 7, 0), result.reason
    assert result.rechecked == 0  # written as the database renders them: no second look


async def test_a_held_event_with_lists_the_chain_cannot_render_is_refused(trail):
    app, _, _ = trail
    event = _read_event()
    event.fields = ["a,b"]
    with pytest.raises(ValueError, match="audit list element"):
        await app.state.sealer.chained(event)
    assert event.request_id not in await _chained_request_ids(app)


async def test_a_held_event_whose_round_fails_is_refused_and_not_kept(trail, failing_rounds):
    app, client, _ = trail
    lost = _read_event()
    with pytest.raises(ServiceUnavailable) as refused:
        await app.state.sealer.chained(lost)  # the database went away: 503, never answered
    assert refused.value.headers["Retry-After"]
    failing_rounds.undo()
    later = _read_event()
    await app.state.sealer.chained(later)
    await _denied(client)
    chained = await _chained_request_ids(app)
    assert later.request_id in chained
    assert lost.request_id not in chained  # its request was refused: nothing to record
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 2, 0), result.reason


def _hold_rounds_up(monkeypatch) -> asyncio.Event:
    """Rounds that wait, having taken their events, until the event returned is set."""
    release = asyncio.Event()
    real = chain.seal_staged

    async def held_up(connection, keys, **options):
        await release.wait()
        return await real(connection, keys, **options)

    monkeypatch.setattr("referral.audit.sealer.seal_staged", held_up)
    return release


async def test_a_held_event_not_chained_in_time_is_refused(trail, monkeypatch):
    """A round held up past the wait: its request is refused with 503. An event the round had
    already taken may still be written (the trail over-records, never under-records); one that
    was still waiting for a round is dropped."""
    app, _, _ = trail
    release = _hold_rounds_up(monkeypatch)
    sealer = Sealer(app.state.engine, app.state.audit_keys, wait_seconds=0.2)
    taken, waiting = _read_event(), _read_event()
    first = asyncio.create_task(sealer.chained(taken))
    await asyncio.sleep(0.05)  # the round has taken it, and is held up
    with pytest.raises(ServiceUnavailable):
        await sealer.chained(waiting)
    with pytest.raises(ServiceUnavailable):
        await first
    release.set()
    await sealer.finished()
    chained = await _chained_request_ids(app)
    assert taken.request_id in chained
    assert waiting.request_id not in chained
    result = await _verify(app)
    assert result.ok, result.reason


async def test_a_cancelled_request_s_event_is_still_chained(trail, monkeypatch):
    """A request cancelled while its event waits (its client went, the server is stopping):
    the round still writes the event, answers the others, and the sealer goes on."""
    app, _, _ = trail
    release = _hold_rounds_up(monkeypatch)
    sealer = Sealer(app.state.engine, app.state.audit_keys, wait_seconds=5)
    gone, kept = _read_event(), _read_event()
    cancelled = asyncio.create_task(sealer.chained(gone))
    answered = asyncio.create_task(sealer.chained(kept))
    await asyncio.sleep(0.05)  # the round has taken both, and is held up
    cancelled.cancel()
    release.set()
    assert await answered is True
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    later = _read_event()
    assert await sealer.chained(later) is True
    await sealer.finished()
    chained = await _chained_request_ids(app)
    assert {gone.request_id, kept.request_id, later.request_id} <= chained
    result = await _verify(app)
    assert result.ok, result.reason


@dataclass(frozen=True)
class _Verdict:
    """A condition for held events that answers as told and counts how often it is asked."""

    name: str
    answer: bool
    asked: list = field(default_factory=list, compare=False, hash=False)

    async def holds(self, connection) -> bool:
        self.asked.append(connection)
        return self.answer


async def test_a_held_event_is_written_only_where_its_condition_holds(trail):
    app, _, _ = trail
    holds, fails = _Verdict("holds", True), _Verdict("fails", False)
    kept = [_read_event() for _ in range(4)]
    dropped = [_read_event() for _ in range(4)]
    written = await asyncio.gather(
        *(app.state.sealer.chained(event, where=holds) for event in kept),
        *(app.state.sealer.chained(event, where=fails) for event in dropped),
    )
    assert written == [True] * 4 + [False] * 4
    chained = await _chained_request_ids(app)
    assert {event.request_id for event in kept} <= chained
    assert not {event.request_id for event in dropped} & chained
    # checked once for the events alike of a round, not once for each
    assert 1 <= len(holds.asked) < 4
    assert 1 <= len(fails.asked) < 4
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 4, 0), result.reason


async def test_rounds_for_held_events_alone_chain_what_is_staged_at_least_every_while(
    trail, monkeypatch
):
    """A round that only held events wait for need not read the staged ones: a request that
    stages waits for a round that does. What a process that died left staged is still
    chained, by the first round after _STAGED_AT_LEAST_EVERY seconds."""
    app, client, _ = trail
    await _denied(client)  # a round that read what was staged, just now
    monkeypatch.setattr("referral.audit.sealer._STAGED_AT_LEAST_EVERY", 3600.0)
    async with app.state.sessionmaker() as session, session.begin():
        chain.track(session, synthetic_event(action="test.left_staged"))
        await chain.stage_pending(session, app.state.audit_keys)  # and nobody waits for it
    (left,) = await _staged_ids(app)
    assert await app.state.sealer.chained(_read_event())
    assert await _staged_ids(app) == [left]  # that round did not read it
    monkeypatch.setattr("referral.audit.sealer._STAGED_AT_LEAST_EVERY", 0.0)
    assert await app.state.sealer.chained(_read_event())
    assert await _staged_ids(app) == []
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 4, 0), result.reason


# --- rounds after the known head (ADR 0033) --------------------------------------------------


async def _round_statements(app, sealer: Sealer) -> list[str]:
    """The statements of one round of `sealer`, for one read's event, the first word of each
    (WITH moved: a write after the known head; UPDATE: the head locked; WITH written: a
    write under the lock)."""
    rounds: list[str] = []
    with counting(app, rounds):
        assert await sealer.chained(_read_event())
    return [" ".join(statement.split()[:2]) for statement in rounds]


AFTER, LOCK, UNDER_LOCK = "WITH moved", "UPDATE audit_chain_head", "WITH written"


@pytest.mark.postgres_only
async def test_a_round_of_reads_after_the_known_head_sends_one_statement(trail):
    """Once rounds have found the head where they left it, a round of held events writes
    them, and moves the head past them, with one statement in autocommit: no lock taken
    first, no transaction to begin and commit."""
    app, _, _ = trail
    sealer = app.state.sealer
    for _ in range(2):  # the head is read under its lock, until it is found where it was left
        await _round_statements(app, sealer)
    assert await _round_statements(app, sealer) == [AFTER]
    held = [_read_event() for _ in range(3)]
    rounds: list[str] = []
    with counting(app, rounds):
        assert await asyncio.gather(*(sealer.chained(event) for event in held))
    assert 1 <= len(rounds) <= 3  # one round for each event at most
    assert all(statement.lstrip().startswith(AFTER) for statement in rounds), rounds
    assert {event.request_id for event in held} <= await _chained_request_ids(app)
    result = await _verify(app)
    assert (result.ok, result.checked) == (True, EVENTS + 6), result.reason


async def test_a_round_after_another_process_moved_the_head_writes_nothing_then_locks(trail):
    """Another process's sealer moved the head: the write after the known head writes
    nothing, and the round reads the head under its lock instead. The rounds after it lock
    the head too, until one finds it where the last left it; then they write after it
    again. One chain, every event in it once."""
    app, _, _ = trail
    mine, other = app.state.sealer, Sealer(app.state.engine, app.state.audit_keys, 5)
    for _ in range(2):
        await _round_statements(app, mine)
    steps = [await _round_statements(app, mine)]
    assert await other.chained(_read_event())
    steps += [await _round_statements(app, mine) for _ in range(3)]
    await other.finished()
    if app.state.engine.dialect.name == "postgresql":
        assert steps == [
            [AFTER],  # alone at the head
            [AFTER, LOCK, UNDER_LOCK],  # the other moved it: nothing written, then locked
            [LOCK, UNDER_LOCK],  # still locked, and found where that round left it
            [AFTER],
        ]
    else:  # SQLite locks the head in every round
        assert all(LOCK in step for step in steps), steps
    result = await _verify(app)
    assert (result.ok, result.checked) == (True, EVENTS + 7), result.reason


async def test_sealers_taking_turns_lock_the_head_rather_than_miss_it(trail):
    """Two processes' sealers taking turns at the head: each finds it moved by the other, so
    neither writes after a head it only remembers; both lock it, and the chain is whole."""
    app, _, _ = trail
    mine, other = app.state.sealer, Sealer(app.state.engine, app.state.audit_keys, 5)
    steps = []
    for _ in range(4):
        steps.append(await _round_statements(app, mine))
        steps.append(await _round_statements(app, other))
    await other.finished()
    missed = [step for step in steps if step[:1] == [AFTER] and LOCK in step]
    assert len(missed) <= 1, steps  # each tries after a head it remembers at most once
    result = await _verify(app)
    assert (result.ok, result.checked) == (True, EVENTS + 8), result.reason


async def test_two_processes_sealing_at_once_keep_one_chain(trail):
    app, client, _ = trail
    other = Sealer(app.state.engine, app.state.audit_keys, wait_seconds=10)
    mine, theirs = [_read_event() for _ in range(20)], [_read_event() for _ in range(20)]
    written = await asyncio.gather(
        *(app.state.sealer.chained(event) for event in mine),
        *(other.chained(event) for event in theirs),
        _denied(client),
    )
    await other.finished()
    assert written[:40] == [True] * 40
    assert {event.request_id for event in mine + theirs} <= await _chained_request_ids(app)
    result = await _verify(app)
    assert (result.ok, result.checked, result.staged) == (True, EVENTS + 41, 0), result.reason


# --- changes made by the round (ADR 0032) ----------------------------------------------------


_BATCHES: list[list[str]] = []  # the batches `_Change.all_hold` was asked


@dataclass(frozen=True, eq=False)
class _Change:
    """A condition that is a change: it writes a row of its own in the round's transaction
    (or raises, if told to), as the lean intake's claim and case do."""

    label: str
    fault: Exception | None = None
    release: asyncio.Event | None = None
    batch: str | None = None
    changes = True

    @staticmethod
    async def all_hold(connection, changes) -> list[bool]:
        _BATCHES.append([change.label for change in changes])
        return [await change.holds(connection) for change in changes]

    async def holds(self, connection) -> bool:
        if self.release is not None:
            await self.release.wait()
        if self.fault is not None:
            raise self.fault
        await connection.execute(
            text("INSERT INTO test_change (label) VALUES (:label)"), {"label": self.label}
        )
        return True


@pytest.fixture
async def changes(trail):
    app, _, _ = trail
    async with app.state.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE test_change (label VARCHAR(40))"))
    return trail


async def _changed(app) -> set[str]:
    async with app.state.engine.connect() as connection:
        return set((await connection.execute(text("SELECT label FROM test_change"))).scalars())


async def test_a_change_and_its_event_commit_together_or_not_at_all(changes, failing_rounds):
    app, _, _ = changes
    lost = _read_event()
    with pytest.raises(ServiceUnavailable):  # the round failed after the change was made
        await app.state.sealer.chained(lost, where=_Change("lost"))
    failing_rounds.undo()
    made = _read_event()
    assert await app.state.sealer.chained(made, where=_Change("made"))
    assert await _changed(app) == {"made"}
    chained = await _chained_request_ids(app)
    assert made.request_id in chained
    assert lost.request_id not in chained


async def test_a_change_that_fails_refuses_its_request_alone(changes):
    """One request's change failing is that request's 500: the others of its round are
    written by the round run again without it."""
    app, _, _ = changes
    release = asyncio.Event()
    first = _Change("first", release=release)  # keeps the round busy until all are held
    bad = _Change("bad", fault=ValueError("a fault of this request's own"))
    events = {name: _read_event() for name in ("first", "bad", "plain", "after")}
    tasks = {
        "first": asyncio.create_task(app.state.sealer.chained(events["first"], where=first)),
    }
    await asyncio.sleep(0.05)
    tasks["bad"] = asyncio.create_task(app.state.sealer.chained(events["bad"], where=bad))
    tasks["plain"] = asyncio.create_task(app.state.sealer.chained(events["plain"]))
    tasks["after"] = asyncio.create_task(
        app.state.sealer.chained(events["after"], where=_Change("after"))
    )
    await asyncio.sleep(0.05)
    release.set()
    assert await tasks["first"]
    with pytest.raises(RuntimeError, match="could not be chained") as refused:
        await tasks["bad"]
    assert isinstance(refused.value.__cause__, ValueError)
    assert await tasks["plain"]
    assert await tasks["after"]
    assert await _changed(app) == {"first", "after"}
    chained = await _chained_request_ids(app)
    assert {events[n].request_id for n in ("first", "plain", "after")} <= chained
    assert events["bad"].request_id not in chained
    result = await _verify(app)
    assert result.ok, result.reason


async def test_a_change_a_round_has_taken_is_answered_with_what_the_round_did(changes):
    """Past the wait, a read's request is refused; a change's waits for its round, which
    may yet commit it: a change is never answered as failed once it may have been made."""
    app, _, _ = changes
    release = asyncio.Event()
    sealer = Sealer(app.state.engine, app.state.audit_keys, wait_seconds=0.1)
    event = _read_event()
    task = asyncio.create_task(sealer.chained(event, where=_Change("slow", release=release)))
    await asyncio.sleep(0.3)  # well past the wait
    assert not task.done()
    release.set()
    assert await task
    await sealer.finished()
    assert await _changed(app) == {"slow"}
    assert event.request_id in await _chained_request_ids(app)


async def test_changes_of_one_statement_are_made_together_and_a_fault_is_found_alone(changes):
    """Changes that share a `batch` are asked together; if the batch fails, each is asked
    alone in the round run again, so that only the one at fault is refused."""
    app, _, _ = changes
    release = asyncio.Event()
    blocker = asyncio.create_task(
        app.state.sealer.chained(_read_event(), where=_Change("blocker", release=release))
    )
    await asyncio.sleep(0.05)  # the round is busy: what follows is held for the next one
    _BATCHES.clear()
    fault = ValueError("a fault of this request's own")
    made = [_Change(f"made{n}", batch="insert") for n in range(3)]
    bad = _Change("bad", fault=fault, batch="insert")
    events = [_read_event() for _ in range(4)]
    tasks = [
        asyncio.create_task(app.state.sealer.chained(event, where=change))
        for event, change in zip(events, [made[0], bad, made[1], made[2]], strict=True)
    ]
    await asyncio.sleep(0.05)
    release.set()
    assert await blocker
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert [outcomes[n] for n in (0, 2, 3)] == [True, True, True]
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[1].__cause__, ValueError)
    assert _BATCHES == [["made0", "bad", "made1", "made2"]]  # then each alone
    assert await _changed(app) == {"blocker", "made0", "made1", "made2"}
    assert app.state.sealer._alone == set()  # nothing kept once answered
    chained = await _chained_request_ids(app)
    assert {events[n].request_id for n in (0, 2, 3)} <= chained
    assert events[1].request_id not in chained
    assert (await _verify(app)).ok
