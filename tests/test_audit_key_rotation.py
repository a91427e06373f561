"""The audit key can be rotated: the chain moves to the new key by a marker event chained
under the new key, verification follows it from key to key, and someone who holds the old
key can neither rewrite what came before the move, nor add to what comes after it, nor cut
the move away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, text
from sqlmodel import select

from referral.audit import chain
from referral.config import generate_secret
from referral.main import create_app
from referral.models import AuditChainHead, AuditEvent
from tests.helpers import cli_env, run_cli, scratch_app, synthetic_event, tamper

BEFORE = 6  # events chained under the first key


async def _denied(client: httpx.AsyncClient, times: int = 1) -> None:
    for _ in range(times):
        assert (await client.get("/api/v1/auth/me")).status_code == 401


@asynccontextmanager
async def _deployed(settings) -> AsyncIterator[tuple]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, client
    finally:
        await app.state.verifier.finished()
        await app.state.sealer.finished()
        await app.state.engine.dispose()


@pytest.fixture
async def rotated(settings, tmp_path):
    """A chain of BEFORE events under the first key, then two under a second: (the first
    app, its settings with both keys, the database, the first key, the second key)."""
    async with scratch_app(settings, tmp_path, "auditkeys") as (app, client, own, database):
        await _denied(client, BEFORE)
        first, second = own.audit_key, SecretStr(generate_secret("audit_key"))
        both = own.model_copy(update={"audit_key": second, "audit_keys_previous": first})
        async with _deployed(both) as (_, moved):
            await _denied(moved, 2)
        yield app, both, database, first, second


async def _verify(settings, **keys: SecretStr | None) -> chain.Verification:
    app = create_app(settings.model_copy(update=keys) if keys else settings)
    try:
        async with app.state.sessionmaker() as session:
            return await chain.verify(session, app.state.audit_keys, batch=4)
    finally:
        await app.state.engine.dispose()


async def _events(app) -> list[AuditEvent]:
    async with app.state.sessionmaker() as session:
        return list((await session.exec(select(AuditEvent).order_by(AuditEvent.seq))).all())


async def test_the_chain_moves_to_the_new_key_by_one_marker(rotated):
    app, both, _, first, second = rotated
    events = await _events(app)
    assert len(events) == BEFORE + 1 + 2
    marker = events[BEFORE]
    assert marker.action == chain.KEY_ROTATED
    old_id, new_id = (chain.key_id(_key(both, k)) for k in (first, second))
    assert marker.resource_ids == [new_id]
    assert marker.purpose == f"succeeds:{old_id}"
    # the marker and the events after it are chained under the new key
    assert marker.hash == chain.compute_hash(_key(both, second), marker.prev_hash, marker)
    after = events[BEFORE + 1]
    assert after.hash == chain.compute_hash(_key(both, second), marker.hash, after)

    result = await _verify(both)
    assert result.ok, result.reason
    assert result.checked == BEFORE + 3
    async with app.state.sessionmaker() as session:
        head = await session.get(AuditChainHead, 1)
    assert (head.seq, head.key_id) == (BEFORE + 3, new_id)


async def test_verification_needs_every_key_the_chain_was_under(rotated):
    _, both, _, first, _ = rotated
    without_the_old = await _verify(both, audit_keys_previous=None)
    assert (without_the_old.ok, without_the_old.first_broken) == (False, 1)
    assert without_the_old.reason == "the contents do not match the hash"
    only_the_old = await _verify(both, audit_key=first, audit_keys_previous=None)
    assert (only_the_old.ok, only_the_old.first_broken) == (False, BEFORE + 1)
    assert only_the_old.reason == "the event moves the chain to an audit key not given"


async def test_the_cli_verifies_across_the_move(rotated):
    _, both, database, first, second = rotated
    env = cli_env(
        both,
        database.url,
        REFERRAL_AUDIT_KEY=second.get_secret_value(),
        REFERRAL_AUDIT_KEYS_PREVIOUS=first.get_secret_value(),
    )
    result = await asyncio.to_thread(run_cli, env, "audit", "verify", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"OK: {BEFORE + 3} events verified" in result.stdout


async def test_the_old_key_cannot_rewrite_the_events_before_the_move(rotated):
    """Whoever holds the old key can rechain everything before the marker; the marker still
    links to the last of those as it was, and only the new key could change that link."""
    app, both, database, first, _ = rotated
    old_key = _key(both, first)
    events = await _events(app)
    prev, statements = chain.GENESIS, []
    for event in events[:BEFORE]:
        if event.seq == 2:
            event.purpose = "rewritten"
        event.hash = chain.compute_hash(old_key, prev, event)
        statements.append(
            f"UPDATE audit_event SET purpose = {_sql(event.purpose)}, prev_hash = '{prev}', "
            f"hash = '{event.hash}' WHERE seq = {event.seq}"
        )
        prev = event.hash
    await tamper(database, "audit_event", *statements)
    result = await _verify(both)
    assert (result.ok, result.first_broken) == (False, BEFORE + 1)
    assert result.reason == "prev_hash does not match the event before it"


async def test_the_old_key_cannot_cut_the_move_away(rotated):
    """Removing the marker and everything after it, head row and all, and going on under
    the old key, leaves a trail that ends under an earlier key: caught."""
    app, both, database, first, _ = rotated
    last = (await _events(app))[BEFORE - 1]
    await tamper(database, "audit_event", f"DELETE FROM audit_event WHERE seq > {last.seq}")
    forged = await _append(app, synthetic_event(action="case.read"), _key(both, first), last)
    result = await _verify(both)
    assert (result.ok, result.first_broken) == (False, forged.seq + 1)
    assert result.reason.startswith("the trail ends under an earlier audit key")


async def test_the_old_key_cannot_take_the_chain_back(rotated):
    app, both, _, first, _ = rotated
    old_key = _key(both, first)
    marker = chain._key_rotation_event(chain.key_id(old_key), "forged")
    back = await _append(app, marker, old_key, (await _events(app))[-1])
    result = await _verify(both)
    assert (result.ok, result.first_broken) == (False, back.seq)
    assert result.reason == "the event moves the chain back to an audit key it left"


async def test_a_server_starting_with_the_new_key_moves_the_chain_at_once(settings, tmp_path):
    """The move is made when a server with the new key starts, with no request needed, so
    that a trail ending under the old key always means something is wrong."""
    async with scratch_app(settings, tmp_path, "movenow") as (app, client, own, _):
        await _denied(client, 2)
        both = own.model_copy(
            update={
                "audit_key": SecretStr(generate_secret("audit_key")),
                "audit_keys_previous": own.audit_key,
            }
        )
        assert not (await _verify(both)).ok  # not moved yet
        async with _deployed(both) as (started, _):
            started.state.sealer.start()  # as the lifespan does
        assert [e.action for e in await _events(app)] == ["account.read"] * 2 + [chain.KEY_ROTATED]
        result = await _verify(both)
        assert (result.ok, result.checked) == (True, 3), result.reason


async def test_the_old_key_cannot_add_events_after_the_move(rotated):
    app, both, _, first, _ = rotated
    last = (await _events(app))[-1]
    forged = await _append(app, synthetic_event(action="case.read"), _key(both, first), last)
    result = await _verify(both)
    assert (result.ok, result.first_broken) == (False, forged.seq)
    assert result.reason == "the contents do not match the hash"


async def test_a_process_without_the_new_key_leaves_its_events_staged(rotated):
    """While a deployment moves to the new key, a process still on the old one must not
    chain: its events stay staged, MAC'd under the old key, until a process with the new
    key chains them."""
    app, both, _, first, _ = rotated
    old_only = both.model_copy(update={"audit_key": first, "audit_keys_previous": None})
    async with _deployed(old_only) as (_, old_client):
        await _denied(old_client, 3)  # answered all the same
    async with app.state.sessionmaker() as session:
        staged = (await session.exec(select(func.count()).select_from(chain._STAGED))).one()
    assert staged == 3
    async with _deployed(both) as (_, new_client):
        await _denied(new_client)  # its round chains the three as well
    result = await _verify(both)
    assert result.ok, result.reason
    assert (result.checked, result.staged) == (BEFORE + 3 + 4, 0)


async def test_a_head_from_before_heads_named_their_key_is_found_by_its_hash(settings, tmp_path):
    """A chain written before this change has a head with no key id. The first round under
    a new key finds the key the head event was chained under, and moves from it."""
    async with scratch_app(settings, tmp_path, "legacyhead") as (app, client, own, _):
        await _denied(client, 3)
        async with app.state.sessionmaker() as session, session.begin():
            await session.exec(text("UPDATE audit_chain_head SET key_id = NULL"))
        both = own.model_copy(
            update={
                "audit_key": SecretStr(generate_secret("audit_key")),
                "audit_keys_previous": own.audit_key,
            }
        )
        async with _deployed(both) as (_, moved):
            await _denied(moved)
        events = await _events(app)
        assert [e.action for e in events][3] == chain.KEY_ROTATED
        result = await _verify(both)
        assert (result.ok, result.checked) == (True, 5), result.reason


async def _append(app, event, key: bytes, after: AuditEvent):
    """`event` chained after `after` with `key`, and the head moved onto it (naming no
    key), as someone with write access to the database and that key would."""
    event.seq, event.prev_hash = after.seq + 1, after.hash
    event.hash = chain.compute_hash(key, event.prev_hash, event)
    async with app.state.sessionmaker() as session, session.begin():
        session.add(AuditEvent(**vars(event)))
        await session.exec(
            text("UPDATE audit_chain_head SET seq = :seq, hash = :hash, key_id = NULL"),
            params={"seq": event.seq, "hash": event.hash},
        )
    return event


def _key(settings, secret: SecretStr) -> bytes:
    return settings.model_copy(update={"audit_key": secret}).audit_chain_key


def _sql(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def test_a_key_left_is_never_current_again(settings):
    again = settings.model_copy(update={"audit_keys_previous": settings.audit_key})
    with pytest.raises(RuntimeError, match="also in REFERRAL_AUDIT_KEYS_PREVIOUS"):
        create_app(again)
