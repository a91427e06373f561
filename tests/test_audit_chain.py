"""The trail cannot be quietly edited: tampering is caught with the right sequence number;
concurrent writers never fork the chain; the table refuses changes; a failed audit write
fails the request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from referral.audit import as_recorded, chain
from referral.main import create_app
from referral.models import AuditChainHead, AuditEvent
from tests.case_world import make_town, new_case
from tests.databases import ScratchDatabase, postgres_server_url
from tests.helpers import (
    cli_env,
    counting,
    run_cli,
    scratch_app,
    synthetic_event,
    tamper,
    unusual_events,
)

EVENTS = 12


@pytest.fixture
async def trail(settings, tmp_path):
    """A fresh database with a chain of EVENTS denied requests, and its own app."""
    async with scratch_app(settings, tmp_path, "chain") as (app, client, own, database):
        for _ in range(EVENTS):
            assert (await client.get("/api/v1/auth/me")).status_code == 401
        yield app, database, own


async def _attack(database: ScratchDatabase, *statements: str) -> None:
    await tamper(database, "audit_event", *statements)


async def _verify(app, checkpoint: chain.Checkpoint | None = None) -> chain.Verification:
    # batches of 5: the trail spans several, so the walk carries on across them, with the
    # next batch in flight while an event is read again on its values
    async with app.state.sessionmaker() as session:
        return await chain.verify(session, app.state.audit_keys, checkpoint, batch=5)


async def _head(app) -> chain.Checkpoint:
    async with app.state.sessionmaker() as session:
        head = await session.get(AuditChainHead, 1)
        return chain.Checkpoint(head.seq, head.hash)


async def test_an_untouched_trail_verifies(trail):
    app, _, _ = trail
    result = await _verify(app, await _head(app))
    assert result.ok, result.reason
    assert result.checked == EVENTS
    assert result.head_seq == EVENTS
    assert result.rechecked == 0  # on PostgreSQL, the database's rendering held throughout


async def test_events_with_every_field_set_hold_on_the_databases_rendering(trail):
    """On PostgreSQL verification hashes the text the database renders; an ordinary event
    with every field set (actor ids, lists, a status code) must not need its values read
    again, or every authenticated request would be checked twice."""
    app, _, _ = trail
    async with app.state.sessionmaker() as session, session.begin():
        for _ in range(3):
            event = chain.pending_event(
                actor_user_id=uuid.uuid4(),
                actor_role="coordinator",
                actor_organisation_id=uuid.uuid4(),
                actor_municipality_id=uuid.uuid4(),
                action="case.read",
                resource_type="case",
                resource_ids=[str(uuid.uuid4()), as_recorded('a "quoted" id')],
                outcome="allowed",
                status_code=200,
                request_id=uuid.uuid4().hex,
                client_address="192.0.2.1",
                purpose="break_glass",
                fields=["given_name", "notes"],
            )
            chain.track(session, event)
        await chain.seal_pending(session, app.state.audit_keys)
    result = await _verify(app)
    assert (result.ok, result.checked, result.rechecked) == (True, EVENTS + 3, 0), result.reason


async def _seal_unusual_events(app) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        for event in unusual_events():
            chain.track(session, event)
        await chain.seal_pending(session, app.state.audit_keys)


async def test_events_rendered_differently_are_checked_on_their_values(trail):
    app, database, _ = trail
    await _seal_unusual_events(app)
    result = await _verify(app)
    assert result.ok, result.reason
    assert result.checked == EVENTS + 3
    assert result.rechecked == (3 if database.is_postgres else 0)


async def test_rows_written_before_track_held_lists_to_the_alphabet_still_verify(trail):
    """Rows of a trail written before `track` refused other list elements (9f4847a) may
    hold them, and they still verify. Escaped text renders as its canonical form; a comma
    next to a quote renders differently, so that row is checked again on its values."""
    app, database, _ = trail
    async with app.state.sessionmaker() as session, session.begin():
        for ids in (["ä"], [", "], ['a"b', "c\\d"]):
            event = synthetic_event(action="test.legacy", resource_ids=ids)
            session.info.setdefault(chain.PENDING_KEY, []).append(event)  # as `track` once did
        await chain.seal_pending(session, app.state.audit_keys)
    result = await _verify(app)
    assert result.ok, result.reason
    assert result.checked == EVENTS + 3
    assert result.rechecked == (1 if database.is_postgres else 0)  # the [", "]


async def test_an_edit_to_an_event_rendered_differently_is_caught(trail):
    app, database, _ = trail
    await _seal_unusual_events(app)
    edit = f"UPDATE audit_event SET purpose = 'Uberprufung' WHERE seq = {EVENTS + 1}"
    await _attack(database, edit)
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, EVENTS + 1)
    assert "contents" in result.reason


async def test_a_field_edited(trail):
    app, database, _ = trail
    await _attack(database, "UPDATE audit_event SET action = 'auth.login' WHERE seq = 5")
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 5)
    assert "contents" in result.reason


async def test_a_row_deleted_from_the_middle(trail):
    app, database, _ = trail
    await _attack(database, "DELETE FROM audit_event WHERE seq = 7")
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 7)
    assert "missing" in result.reason


async def test_two_rows_swapped(trail):
    app, database, _ = trail
    await _attack(
        database,
        "UPDATE audit_event SET seq = -1 WHERE seq = 4",
        "UPDATE audit_event SET seq = 4 WHERE seq = 5",
        "UPDATE audit_event SET seq = 5 WHERE seq = -1",
    )
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 4)


async def test_a_back_dated_row_inserted(trail):
    app, database, _ = trail
    async with app.state.sessionmaker() as session:
        original = (await session.exec(select(AuditEvent).where(AuditEvent.seq == 3))).one()
    # make room at 6 by moving the later rows up, then forge a plausible event there
    shifts = [f"UPDATE audit_event SET seq = seq + 1 WHERE seq = {n}" for n in range(EVENTS, 5, -1)]
    forged = (
        "INSERT INTO audit_event (seq, occurred_at, action, resource_ids, outcome, fields, "
        "prev_hash, hash) VALUES (6, '2020-01-01 00:00:00', 'case.read', '[]', 'allowed', "
        f"'[]', '{original.hash}', '{'ab' * 32}')"
    )
    await _attack(database, *shifts, forged)
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 6)


async def test_a_trail_that_grows_during_the_walk_still_verifies(trail, monkeypatch):
    """Events go on being chained while a walk runs (an auditor polling it adds some). The
    walk reads one snapshot, so an event chained after it read the last one is not taken
    for a cut: the head row, read at the end, would otherwise be ahead of the walk."""
    app, _, _ = trail
    finish = chain._finish

    async def an_event_chained_meanwhile(*args, **kwargs):
        async with app.state.sessionmaker() as session, session.begin():
            chain.track(session, synthetic_event(action="test.meanwhile"))
            await chain.seal_pending(session, app.state.audit_keys)
        return await finish(*args, **kwargs)

    monkeypatch.setattr(chain, "_finish", an_event_chained_meanwhile)
    during = await _verify(app)
    monkeypatch.setattr(chain, "_finish", finish)
    after = await _verify(app)

    assert during.ok, during.reason
    assert (during.checked, during.head_seq) == (EVENTS, EVENTS)
    assert after.ok, after.reason
    assert after.head_seq == EVENTS + 1  # the event chained during the first walk


async def test_verify_wants_a_session_of_its_own(trail):
    app, _, _ = trail
    async with app.state.sessionmaker() as session:
        await session.exec(select(AuditEvent.seq).limit(1))
        with pytest.raises(RuntimeError, match="session of its own"):
            await chain.verify(session, app.state.audit_keys)


async def test_the_tail_truncated_is_caught_against_a_checkpoint(trail):
    app, database, _ = trail
    checkpoint = await _head(app)
    async with app.state.sessionmaker() as session:
        ninth = (await session.exec(select(AuditEvent).where(AuditEvent.seq == 9))).one()
    # a careful attacker also rewinds the head row, so only the checkpoint can tell
    await _attack(
        database,
        "DELETE FROM audit_event WHERE seq > 9",
        f"UPDATE audit_chain_head SET seq = 9, hash = '{ninth.hash}'",
    )
    assert (await _verify(app)).ok  # consistent in itself ...
    result = await _verify(app, checkpoint)  # ... but not with what was kept elsewhere
    assert (result.ok, result.first_broken) == (False, 10)
    assert "truncated" in result.reason


async def test_the_tail_truncated_without_rewinding_the_head(trail):
    app, database, _ = trail
    await _attack(database, "DELETE FROM audit_event WHERE seq > 10")
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 11)


async def test_a_row_deleted_early_in_the_trail(trail):
    app, database, _ = trail
    await _attack(database, "DELETE FROM audit_event WHERE seq = 5")
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 5)
    assert result.reason == "event 5 is missing (the next is 6)"


async def test_a_prev_hash_changed(trail):
    app, database, _ = trail
    await _attack(database, f"UPDATE audit_event SET prev_hash = '{'cd' * 32}' WHERE seq = 9")
    result = await _verify(app)
    assert (result.ok, result.first_broken) == (False, 9)
    assert result.reason == "prev_hash does not match the event before it"


async def test_cli_checkpoint_and_verify(trail, tmp_path):
    _, database, own = trail
    env = cli_env(own, database.url)
    printed = await asyncio.to_thread(run_cli, env, "audit", "checkpoint")
    assert printed.returncode == 0, printed.stderr
    head = json.loads(printed.stdout)
    assert head["seq"] == EVENTS
    saved = tmp_path / "checkpoint.json"
    saved.write_text(printed.stdout)
    ok = await asyncio.to_thread(run_cli, env, "audit", "verify", "--checkpoint", str(saved))
    assert ok.returncode == 0, ok.stderr
    assert f"OK: {EVENTS} events verified" in ok.stdout
    assert "verifying" in ok.stderr  # the progress bar

    await _attack(
        database,
        "DELETE FROM audit_event WHERE seq > 8",
        "UPDATE audit_chain_head SET seq = 8, hash = (SELECT hash FROM audit_event WHERE seq = 8)",
    )
    broken = await asyncio.to_thread(run_cli, env, "audit", "verify", "--checkpoint", str(saved))
    assert broken.returncode == 1
    assert "BROKEN at event 9" in broken.stderr


# --- concurrency, append-only, fail closed --------------------------------------------------


async def test_200_concurrent_audited_requests_chain_without_forking(settings, test_db, world):
    app = create_app(
        settings.model_copy(update={"database_pool_size": 25, "database_pool_timeout_seconds": 60})
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            town = await make_town(client, world)
            case_id = await new_case(client, town.referrer)
            before = (await _head(app)).seq
            rounds: list[str] = []
            with counting(app, rounds):
                responses = await asyncio.gather(
                    *[
                        client.get(f"/api/v1/cases/{case_id}", headers=town.coordinator.headers)
                        for _ in range(200)
                    ]
                )
            assert [r.status_code for r in responses] == [200] * 200
            after = await _head(app)
            assert after.seq - before == 200
            # the sealer chained them in groups: the head was locked less than once a request
            head_locks = [r for r in rounds if r.startswith("UPDATE audit_chain_head")]
            assert 0 < len([r for r in head_locks if "RETURNING" in r]) < 200
            async with app.state.sessionmaker() as session:
                reads = (
                    await session.exec(
                        select(AuditEvent).where(AuditEvent.seq > before).order_by(AuditEvent.seq)
                    )
                ).all()
            assert [e.action for e in reads] == ["case.read"] * 200
            assert len({e.request_id for e in reads}) == 200
            result = await _verify(app)
            assert result.ok, result.reason
    finally:
        await app.state.engine.dispose()


# SQLite has no TRUNCATE (an unqualified DELETE is its form of it)
CHANGES = ["UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"]
if postgres_server_url():
    CHANGES.append("TRUNCATE audit_event")


@pytest.mark.parametrize("statement", CHANGES)
async def test_the_application_user_cannot_change_the_trail(app, client, statement):
    assert (await client.get("/api/v1/auth/me")).status_code == 401  # at least one event
    async with app.state.engine.connect() as connection:
        with pytest.raises(DBAPIError) as info:
            await connection.execute(text(statement))
        assert "append-only" in str(info.value)
        await connection.rollback()


async def test_a_failed_audit_write_fails_the_request_and_rolls_back(
    app, client, world, monkeypatch
):
    town = await make_town(client, world)
    case_id = await new_case(client, town.referrer)

    async def broken_stage(session, key):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr("referral.db.stage_pending", broken_stage)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as failing:
        response = await failing.post(
            f"/api/v1/cases/{case_id}/notes",
            headers=town.coordinator.headers,
            json={"section": "general", "body": "Must not persist."},
        )
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("application/problem+json")
    monkeypatch.undo()
    notes = await client.get(f"/api/v1/cases/{case_id}/notes", headers=town.coordinator.headers)
    assert notes.json() == []


async def test_every_event_in_the_shared_trail_is_chained(app):
    result = await _verify(app)
    assert result.ok, result.reason
    assert result.checked > 0


# --- the canonical form ---------------------------------------------------------------------

# any text, and ASCII alone (control characters and DEL included): the two paths of
# chain._canonical, orjson's and json.dumps'
_text = st.text(max_size=40) | st.text(st.characters(max_codepoint=127), max_size=40)
_maybe_uuid = st.none() | st.uuids()


@given(
    seq=st.integers(min_value=1, max_value=2**62),
    occurred_at=st.datetimes(timezones=st.just(UTC)),
    actor=_maybe_uuid,
    role=st.none() | _text,
    action=_text,
    ids=st.lists(_text, max_size=4),
    status=st.none() | st.integers(min_value=100, max_value=599),
    fields=st.lists(_text, max_size=6),
    purpose=st.none() | _text,
)
def test_canonical_form_is_json_dumps_with_sorted_keys_byte_for_byte(
    seq, occurred_at, actor, role, action, ids, status, fields, purpose
):
    """The canonical encoder (fast enough for tens of millions of events) writes what
    json.dumps(sort_keys=True, separators=(",", ":")) writes, for every value an event holds:
    any text, including quotes, control characters, DEL and non-ASCII."""
    event = AuditEvent(
        seq=seq,
        occurred_at=occurred_at,
        actor_user_id=actor,
        actor_role=role,
        actor_organisation_id=actor,
        actor_municipality_id=None,
        action=action,
        resource_type="case",
        resource_ids=ids,
        outcome="allowed",
        status_code=status,
        request_id="r-1",
        client_address="192.0.2.1",
        purpose=purpose,
        fields=fields,
    )
    plain = {
        name: (
            value.isoformat()
            if hasattr(value, "isoformat")
            else str(value)
            if isinstance(value, uuid.UUID)
            else value
        )
        for name in chain.CHAINED_FIELDS
        for value in [getattr(event, name)]
    }
    expected = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    assert chain.canonical(event) == expected
    # the hash is the HMAC-SHA256 the design names, over prev_hash and exactly these bytes
    key, prev = b"synthetic-audit-key-of-32-bytes!", "ab" * 32
    mac = hmac.new(key, prev.encode() + expected, hashlib.sha256).hexdigest()
    assert chain.compute_hash(key, prev, event) == mac
    pending = chain.pending_event(
        **event.model_dump(exclude={"seq", "occurred_at", "prev_hash", "hash"})
    )
    pending.seq, pending.occurred_at = event.seq, event.occurred_at
    assert chain.compute_hash(key, prev, pending) == mac
    # a staged event's form (seq null) given its place in the chain is the same form
    assert chain._with_seq(chain._staged_content(pending), seq) == expected


def test_a_staged_form_takes_its_place_at_the_events_own_seq():
    """A JSON column may hold an object with a "seq" of its own; the place is written at the
    event's key, not there."""
    event = synthetic_event(
        action="test.nested",
        resource_ids=[{"seq": None}],
        purpose='"seq":null',
        fields=[{"seq": None}],
    )
    staged = chain._staged_content(event)
    event.seq = 41
    assert chain._with_seq(staged, 41) == chain.canonical(event)
    with pytest.raises(ValueError, match="not the canonical form of a staged event"):
        chain._with_seq(chain.canonical(event), 42)  # a form that already has its place
