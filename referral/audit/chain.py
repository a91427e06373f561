"""The hash chain over audit events: staging, sealing, verification, checkpoints.

Each event's hash is HMAC-SHA256(audit key, prev_hash || canonical JSON of the event), with
the audit key kept outside the database. Chaining always happens under a lock on the single
`audit_chain_head` row: an UPDATE of it reserves contiguous sequence numbers and holds the
head until commit, so chaining is serial and the chain cannot fork (ADR 0008). Requests
stage their events and a sealer chains them in rounds (ADR 0014); offline jobs chain theirs
at commit (`seal_pending`). A round that knows where the head is writes after it in one
statement whose UPDATE of the head holds only if the head is still there (ADR 0033).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Text,
    bindparam,
    cast,
    delete,
    insert,
    literal_column,
    null,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import ARRAY, asyncpg
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.driver import in_autocommit, on_driver
from referral.models import AuditChainHead, AuditEvent, audit_staged
from referral.models.base import utcnow

GENESIS = "0" * 64
NOT_SEALED = "the event is not sealed into the chain"
PENDING_KEY = "audit_pending"
CHAINED_FIELDS = (
    "seq",
    "occurred_at",
    "actor_user_id",
    "actor_role",
    "actor_organisation_id",
    "actor_municipality_id",
    "action",
    "resource_type",
    "resource_ids",
    "outcome",
    "status_code",
    "request_id",
    "client_address",
    "purpose",
    "fields",
)


def _as_text(value: Any) -> str:
    """UUIDs as their string form, datetimes in ISO 8601: the only non-JSON values."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# The canonical form is json.dumps(document, sort_keys=True, separators=(",", ":")), with
# UUIDs and datetimes as text (_as_text). orjson writes the very same bytes, five times
# faster, whenever they are ASCII without DEL, which json.dumps escapes and orjson does not;
# anything else (non-ASCII text, DEL, numbers beyond 64 bits) goes through json.dumps
# itself. Verification encodes tens of millions of events (ADR 0013), and
# tests/test_audit_chain.py holds both paths to json.dumps byte for byte.
_SORTED_FIELDS = tuple(sorted(CHAINED_FIELDS))


def _canonical(values: Sequence[Any]) -> bytes:
    """`values` in _SORTED_FIELDS order."""
    document = dict(zip(_SORTED_FIELDS, values, strict=True))  # in sorted order already
    try:
        fast = orjson.dumps(document, default=_as_text)
        if fast.isascii() and b"\x7f" not in fast:
            return fast
    except orjson.JSONEncodeError:
        pass
    return json.dumps(document, separators=(",", ":"), default=_as_text).encode()


def canonical(event: Any) -> bytes:
    return _canonical([getattr(event, name) for name in _SORTED_FIELDS])


def compute_hash(key: bytes, prev_hash: str, event: Any) -> str:
    return _mac(key, prev_hash, canonical(event))


def _mac(key: bytes, prev_hash: str, content: bytes) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).hexdigest()
    return hmac.digest(key, prev_hash.encode() + content, "sha256").hex()


# --- the audit keys (ADR 0023) --------------------------------------------------------------
# The chain moves to a new key by a marker event that names the new key and is chained under
# it. Verification starts under the key of the first event and changes key only at a marker,
# never back to a key it has left: so an old key, once succeeded, vouches for nothing after,
# and the marker's link binds everything before it under the new key.

KEY_ROTATED = "audit.key_rotated"
# How a marker's canonical form, and PostgreSQL's rendering of it, begins: "action" sorts
# first of the fields. A test, not a scan: it runs once per event of the trail.
_MARKER = b'{"action":"%s"' % KEY_ROTATED.encode()
if _SORTED_FIELDS[0] != "action":  # pragma: no cover - a guard on the line above
    raise RuntimeError("a marker event is found by its first field, which is no longer action")


def key_id(key: bytes) -> str:
    """A name for an audit key that gives nothing of the key away."""
    return hmac.digest(key, b"referral audit key id", "sha256").hex()[:16]


@dataclass(frozen=True)
class AuditKeys:
    """The key new events are chained under, and the keys earlier stretches of the chain
    were chained under: kept to verify those, and to accept events that a process not yet
    given the new key staged under the old one."""

    current: bytes
    previous: tuple[bytes, ...] = ()
    current_id: str = field(init=False)
    by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "current_id", key_id(self.current))
        object.__setattr__(self, "by_id", {key_id(k): k for k in (*self.previous, self.current)})

    @property
    def every(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


class UnknownAuditKey(RuntimeError):
    """The chain continues under a key this process was not given: it must not chain."""


def _key_rotation_event(successor: str, predecessor: str) -> SimpleNamespace:
    return pending_event(
        **dict.fromkeys(("actor_user_id", "actor_role", "actor_organisation_id"), None),
        actor_municipality_id=None,
        action=KEY_ROTATED,
        resource_type="audit_key",
        resource_ids=[successor],
        outcome="allowed",
        status_code=None,
        request_id=None,
        client_address=None,
        purpose=f"succeeds:{predecessor}",
        fields=[],
    )


def pending_event(**values: Any) -> SimpleNamespace:
    """An event to seal: a plain record with the columns of `audit_event`. Not an ORM
    object: one is built on every audited request, and the table model's instrumented
    constructor cost more than the rest of the event (ADR 0012)."""
    event = SimpleNamespace(seq=None, occurred_at=utcnow(), prev_hash=None, hash=None, **values)
    if vars(event).keys() != _STORED_NAMES:
        raise TypeError(f"an audit event has exactly the columns {sorted(_STORED_NAMES)}")
    return event


# What an element of a recorded list (resource_ids, fields) may hold: printable ASCII but
# for the comma, the quote and the backslash. On such lists the database's rendering of a
# list is injective (`_rendered_by_postgresql`); `audit.as_recorded` brings any text to it.
LIST_ELEMENT_CHARACTERS = "".join(c for c in map(chr, range(0x20, 0x7F)) if c not in ',"\\')
# The elements are checked together, joined by NUL, which no element may hold: one match of
# the whole list instead of one per element (a list page's event names 50 cases). A NUL
# inside an element shows as one separator too many.
_JOINED_ELEMENTS = re.compile(f"[{re.escape(LIST_ELEMENT_CHARACTERS)}\x00]*")


def _recordable(elements: Any) -> bool:
    listed = list(elements or ())
    if not all(isinstance(e, str) for e in listed):
        return False
    joined = "\x00".join(listed)
    return joined.count("\x00") == max(len(listed) - 1, 0) and bool(
        _JOINED_ELEMENTS.fullmatch(joined)
    )


def track(session: AsyncSession, event: AuditEvent | SimpleNamespace) -> None:
    """Hold an event, in order, to be sealed and inserted when the transaction commits.

    It is not added to the session yet: an autoflush would insert it unsealed, and the
    table accepts no UPDATE afterwards. Every writer's events pass here (a read's may go to
    `Sealer.chained` instead), so here the lists are held to what the chain's rendering
    needs: a list element with a separator in it is refused, never recorded (ADR 0013).
    """
    check_recordable(event)
    session.info.setdefault(PENDING_KEY, []).append(event)


def check_recordable(event: Any) -> None:
    """Refuse an event whose lists the chain's rendering could not tell apart (ADR 0013)."""
    if not (_recordable(event.resource_ids) and _recordable(event.fields)):
        raise ValueError(
            "an audit list element holds a comma, a quote, a backslash or text that is not "
            "printable ASCII; record it through audit.as_recorded"
        )


_HEAD = AuditChainHead.__table__
_RESERVE = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq + bindparam("count"))
    .returning(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.key_id)
)
_SET_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"), key_id=bindparam("head_key"))
)
_INSERT = insert(AuditEvent.__table__)
_STORED = tuple(column.name for column in AuditEvent.__table__.columns)
_STORED_NAMES = frozenset(_STORED)


async def seal_pending(session: AsyncSession, keys: AuditKeys) -> int:
    """Chain this transaction's events onto the head. Call last, just before commit.

    For the offline jobs (CLI); requests stage theirs instead (ADR 0014). The head stays
    locked until this transaction ends."""
    pending: list[Any] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return 0
    connection = await session.connection()
    seq, prev = await _continue_chain(connection, keys, *await _lock_head(connection))
    for event in pending:
        seq += 1
        event.seq, event.prev_hash = seq, prev
        event.hash = prev = compute_hash(keys.current, prev, event)
    await connection.execute(
        _INSERT, [{name: getattr(event, name) for name in _STORED} for event in pending]
    )
    await _set_head(connection, keys, seq, prev)
    return len(pending)


async def _lock_head(connection: Any) -> tuple[int, str, str | None]:
    """The chain's head (seq, hash, key id), locked until the transaction ends."""
    return tuple((await connection.execute(_RESERVE, {"count": 0})).one())  # type: ignore[return-value]


async def _set_head(connection: Any, keys: AuditKeys, seq: int, last: str) -> None:
    await connection.execute(_SET_HEAD, _head_values(keys, seq, last))


def _head_values(keys: AuditKeys, seq: int, last: str) -> dict[str, Any]:
    return {"head_seq": seq, "head_hash": last, "head_key": keys.current_id}


async def _continue_chain(
    connection: Any, keys: AuditKeys, seq: int, prev: str, head_key: str | None
) -> tuple[int, str]:
    """Where the next event goes, under the current key: after the head, and after a
    marker moving the chain to the current key if it ends under another. With the head
    locked. Raises UnknownAuditKey if the chain ends under a key this process lacks."""
    if head_key == keys.current_id or prev == GENESIS:
        return seq, prev
    before = keys.by_id.get(head_key) if head_key else await _key_of_event(connection, keys, seq)
    if before is None:
        raise UnknownAuditKey(
            f"the audit chain continues under key {head_key or '(of the head event)'}, which "
            "this process was not given; its events stay staged until a process with it chains them"
        )
    if before == keys.current:  # a head recorded before heads named their key
        return seq, prev
    marker = _key_rotation_event(keys.current_id, key_id(before))
    marker.seq, marker.prev_hash = seq + 1, prev
    marker.hash = compute_hash(keys.current, prev, marker)
    await connection.execute(_INSERT, {name: getattr(marker, name) for name in _STORED})
    return marker.seq, marker.hash


async def _key_of_event(connection: Any, keys: AuditKeys, seq: int) -> bytes | None:
    """The key whose hash the event `seq` carries, of those given; None if none."""
    row = (await connection.execute(_EXACT, {"after": seq - 1, "until": seq, "batch": 1})).first()
    if row is None or row[_HASH] is None:
        return None
    content = _exact_content(row)
    return next((k for k in keys.every if _mac(k, row[_PREV], content) == row[_HASH]), None)


# --- staged events and the sealer's round (ADR 0014) ----------------------------------------
# A request no longer chains its events under the head row's lock. It writes them to
# `audit_staged`, each with its own MAC, in the transaction of its change (fail closed), and
# after commit waits for the sealer (referral.audit.sealer), whose one round chains every
# staged event under the lock. Only the sealer's round holds the head, once for many requests.

_STAGED = audit_staged
_STAGED_CONTENT = tuple(c.name for c in _STAGED.columns if c.name not in ("id", "mac"))
_STAGE = insert(_STAGED)
_STAGED_BATCH = (
    sa_select(_STAGED)
    .where(_STAGED.c.id > bindparam("after"))
    .order_by(_STAGED.c.id)
    .limit(bindparam("size"))
)
_STAGED_ONE = sa_select(_STAGED).where(_STAGED.c.id == bindparam("id"))
_UNSTAGE = _STAGED.delete().where(_STAGED.c.id.in_(bindparam("ids", expanding=True)))
# Chain links start with 64 hex digits; this prefix cannot, so a staged event's MAC can never
# stand in for a link, nor a link for a staged MAC.
_STAGED_DOMAIN = "staged:"


def _staged_content(values: Any) -> bytes:
    """An event's canonical form before it has a place in the chain: seq null. `values` has
    the event's columns as attributes or as a mapping."""
    get = values.get if isinstance(values, Mapping) else lambda name: getattr(values, name)
    return _canonical([None if name == "seq" else get(name) for name in _SORTED_FIELDS])


def staged_mac(key: bytes, values: Any) -> str:
    """The MAC of an event before it has a place in the chain."""
    return _mac(key, _STAGED_DOMAIN, _staged_content(values))


async def stage_pending(session: AsyncSession, keys: AuditKeys) -> int:
    """Write this transaction's events to `audit_staged`, each with its MAC. Call last,
    just before commit: they commit with the change they record, or neither does."""
    pending: list[Any] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return 0
    rows = [staged_row(keys, event) for event in pending]
    connection = await session.connection()
    await connection.execute(_STAGE, rows[0] if len(rows) == 1 else rows)
    return len(rows)


def staged_row(keys: AuditKeys, event: Any) -> dict[str, Any]:
    """An event's row in `audit_staged`: its columns and its MAC under the current key."""
    return {name: getattr(event, name) for name in _STAGED_CONTENT} | {
        "mac": staged_mac(keys.current, event)
    }


def _held_content(keys: AuditKeys, values: Any, mac: str) -> bytes | None:
    """A staged event's canonical form (seq null) if its MAC holds under one of the keys
    (a process not yet given the current one stages under the key before it), else None."""
    content = _staged_content(values)
    for key in keys.every:
        if hmac.compare_digest(_mac(key, _STAGED_DOMAIN, content), mac):
            return content
    return None


_NO_SEQ = b'"seq":null'
_AFTER_SEQ = re.compile(rb',"status_code":(?:null|-?[0-9]+)}\Z')


def _with_seq(staged_content: bytes, seq: int) -> bytes:
    """The canonical form of a staged event once it has its place `seq` in the chain.

    The event's own "seq" is the last `"seq":null` of its form: only "status_code", a number
    or null, sorts after it, and a "seq" inside a JSON column sorts before it."""
    head, found, tail = staged_content.rpartition(_NO_SEQ)
    if not found or not _AFTER_SEQ.match(tail):
        raise ValueError("not the canonical form of a staged event")
    return b'%s"seq":%d%s' % (head, seq, tail)


@dataclass(frozen=True, slots=True)
class Head:
    """Where the chain ends: the last event's seq and hash (under the current key)."""

    seq: int
    hash: str


# A batch of links into the chain: (staged id, seq, prev_hash, hash) for each event.
Links = list[tuple[int, int, str, str]]


class _StagedEvents:
    """Reads the staged events in staged order, a batch at a time, each with its canonical
    form if its MAC holds (None if not), and moves chained ones into the trail. Portable:
    through SQLAlchemy, on SQLite and PostgreSQL alike."""

    def __init__(self, connection: Any, keys: AuditKeys) -> None:
        self.connection, self.keys = connection, keys
        self._values: dict[int, Any] = {}

    async def batches(self, size: int) -> AsyncIterator[list[tuple[int, bytes | None]]]:
        after = -1
        while rows := await self._batch(after, size):
            after = rows[-1][0]
            yield await self._contents(rows)
            if len(rows) < size:
                return

    async def _batch(self, after: int, size: int) -> Sequence[Any]:
        rows = (await self.connection.execute(_STAGED_BATCH, {"after": after, "size": size})).all()
        self._values = {row.id: row._mapping for row in rows}
        return rows

    async def _contents(self, rows: Sequence[Any]) -> list[tuple[int, bytes | None]]:
        return [(row.id, _held_content(self.keys, row._mapping, row.mac)) for row in rows]

    async def move(self, links: Links) -> None:
        events = [
            {name: self._values[staged_id][name] for name in _STAGED_CONTENT}
            | {"seq": seq, "prev_hash": prev, "hash": link}
            for staged_id, seq, prev, link in links
        ]
        await self.connection.execute(_INSERT, events)
        await self.connection.execute(_UNSTAGE, {"ids": [staged_id for staged_id, *_ in links]})

    async def write_last(self, rows: list[dict[str, Any]], head: dict[str, Any]) -> None:
        """Insert the last events of a round, chained, given by their values (held events,
        ADR 0031), and move the head to the last of them (`_head_values`)."""
        await self.connection.execute(_INSERT, rows)
        await self.connection.execute(_SET_HEAD, head)

    async def write_after(
        self, rows: list[dict[str, Any]], head: dict[str, Any], after: Head
    ) -> bool:
        """Here, never: the head is read under its lock instead (`seal_staged`)."""
        return False


class _StagedEventsOnPostgreSQL(_StagedEvents):
    """The same on PostgreSQL, at a fraction of the cost per event (ADR 0019): each event is
    read as the canonical text the database renders (checked by its MAC, and on its values
    when the rendering differs), and a batch is moved by one statement that carries only the
    links, so its values never pass through Python."""

    async def _batch(self, after: int, size: int) -> Sequence[Any]:
        return (await self.connection.exec_driver_sql(_DRIVER_STAGED_SQL, (after, size))).all()

    async def _contents(self, rows: Sequence[Any]) -> list[tuple[int, bytes | None]]:
        contents: list[tuple[int, bytes | None]] = []
        for staged_id, mac, rendered in rows:
            content = rendered.encode()
            if not hmac.compare_digest(_mac(self.keys.current, _STAGED_DOMAIN, content), mac):
                exact = await self.connection.execute(_STAGED_ONE, {"id": staged_id})
                values = exact.one_or_none()
                content = None if values is None else _held_content(self.keys, values._mapping, mac)
            contents.append((staged_id, content))
        return contents

    async def move(self, links: Links) -> None:
        ids, seqs, prevs, hashes = (list(column) for column in zip(*links, strict=True))
        moved = await self.connection.exec_driver_sql(_DRIVER_MOVE_SQL, (ids, seqs, prevs, hashes))
        if moved.rowcount != len(links):  # a staged row went while the round held the head
            raise RuntimeError(f"{len(links)} staged events were chained, {moved.rowcount} moved")

    async def write_last(self, rows: list[dict[str, Any]], head: dict[str, Any]) -> None:
        """One statement, whatever the number of events: their values as one array per
        column, and the head moved, a fraction of the cost of an INSERT of many rows and an
        UPDATE through SQLAlchemy, and one round trip of the round instead of two."""
        values = head | _columns(rows)
        await self.connection.exec_driver_sql(
            _DRIVER_WRITE_SQL, tuple(values[name] for name in _DRIVER_WRITE_ORDER)
        )

    async def write_after(
        self, rows: list[dict[str, Any]], head: dict[str, Any], after: Head
    ) -> bool:
        """`write_last` in one statement, only if the head is still `after`: whether it was
        (and the events are written). Atomic on its own, so it needs no transaction."""
        values = head | _columns(rows) | {"after_seq": after.seq, "after_hash": after.hash}
        arguments = tuple(values[name] for name in _DRIVER_WRITE_AFTER_ORDER)
        if in_autocommit(self.connection):  # a round of reads: by the driver (ADR 0037)
            return (
                await on_driver(self.connection, "fetchval", _DRIVER_WRITE_AFTER_SQL, arguments)
                == 1
            )
        moved = await self.connection.exec_driver_sql(_DRIVER_WRITE_AFTER_SQL, arguments)
        return moved.scalar_one() == 1


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows of held events as one array per column, the JSON ones as text."""
    return {
        name: [json.dumps(row[name]) for row in rows]
        if name in _JSON_COLUMNS
        else [row[name] for row in rows]
        for name in _WRITTEN
    }


def _staged_events(connection: Any, keys: AuditKeys) -> _StagedEvents:
    if connection.dialect.name == "postgresql":
        return _StagedEventsOnPostgreSQL(connection, keys)
    return _StagedEvents(connection, keys)


async def _nothing() -> AsyncIterator[list[tuple[int, bytes | None]]]:
    return
    yield


@dataclass
class SealRound:
    sealed: int = 0
    refused: list[int] = field(default_factory=list)  # staged ids whose MAC does not hold
    # where the round left the chain, if it ends under the current key
    head: Head | None = None
    # given where the head was expected (`after`), it was not there: nothing was written
    missed: bool = False
    # where the round found the head under its lock, if it ends under the current key
    found: Head | None = None


async def seal_staged(
    connection: Any,
    keys: AuditKeys,
    batch: int = 2_000,
    move: bool = False,
    held: Sequence[Any] = (),
    staged: bool = True,
    after: Head | None = None,
) -> SealRound:
    """Chain every staged event, in staged order, onto the head, in the caller's transaction;
    then the `held` events, in their order: events of requests that changed nothing, handed
    to the round from memory and written straight into the trail (ADR 0031). With
    `staged=False`, only the held ones: a round that no staging request waits for.

    The head row is locked first (`seq + 0`), so rounds in several processes run one after
    another and each sees what the one before it left. A staged row whose MAC does not hold
    was not written by this application: it is left where it is, and verification fails
    until someone looks at it.

    With `after` (where the last round left the head) and only held events, the head is not
    read first: the events are chained after `after` and written by one statement that
    moves the head only if it is still there, so it needs no transaction (ADR 0033). If
    the head has moved, nothing is written and the outcome says so (`missed`): the caller
    seals again without `after`, in a transaction."""
    if after is not None and not staged and not move:
        if not held:
            return SealRound(head=after)
        rows, last = _chained_after(keys, held, after)
        written = await _staged_events(connection, keys).write_after(
            rows, _head_values(keys, last.seq, last.hash), after
        )
        return SealRound(sealed=len(rows), head=last) if written else SealRound(missed=True)
    seq, prev, head_key = await _lock_head(connection)
    outcome = SealRound(found=Head(seq, prev) if head_key == keys.current_id else None)
    continued = moved = move and head_key != keys.current_id
    if moved:  # at a sealer's start: the chain moves to its key whether or not events wait
        seq, prev = await _continue_chain(connection, keys, seq, prev, head_key)
    events = _staged_events(connection, keys)
    async for rows in events.batches(batch) if staged else _nothing():
        links: Links = []
        for staged_id, content in rows:
            if content is None:
                outcome.refused.append(staged_id)
                continue
            if not continued:  # a marker, if the key changed, only before a real event
                seq, prev = await _continue_chain(connection, keys, seq, prev, head_key)
                continued = True
            seq += 1
            link = _mac(keys.current, prev, _with_seq(content, seq))
            links.append((staged_id, seq, prev, link))
            prev = link
        if links:
            await events.move(links)
            outcome.sealed += len(links)
    if held:
        if not continued:
            seq, prev = await _continue_chain(connection, keys, seq, prev, head_key)
            continued = True
        rows, last = _chained_after(keys, held, Head(seq, prev))
        seq, prev = last.seq, last.hash
        await events.write_last(rows, _head_values(keys, seq, prev))
        outcome.sealed += len(rows)
    elif outcome.sealed or moved:
        await _set_head(connection, keys, seq, prev)
    if continued or head_key == keys.current_id:  # the head now names the current key
        outcome.head = Head(seq, prev)
    return outcome


def _chained_after(
    keys: AuditKeys, held: Sequence[Any], after: Head
) -> tuple[list[dict[str, Any]], Head]:
    """The held events' rows, chained one after another from `after`, and the last link."""
    seq, prev = after.seq, after.hash
    rows = []
    for event in held:
        seq += 1
        link = _mac(keys.current, prev, _with_seq(_staged_content(event), seq))
        content = {name: getattr(event, name) for name in _STAGED_CONTENT}
        rows.append(content | {"seq": seq, "prev_hash": prev, "hash": link})
        prev = link
    return rows, Head(seq, prev)


@dataclass
class Verification:
    ok: bool
    checked: int = 0
    unchained: int = 0
    # events whose database rendering failed its hash, then checked on their exact values
    rechecked: int = 0
    # committed events the sealer has not chained yet (ADR 0014); each MAC checked
    staged: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    first_broken: int | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def broken(self, seq: int, reason: str) -> Verification:
        self.ok, self.first_broken, self.reason = False, seq, reason
        return self


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str


_JSON_COLUMNS = ("resource_ids", "fields")
_EVENT = AuditEvent.__table__.c
# Every row verification reads starts (seq, prev_hash, hash); then comes the event, either
# as its values (the exact form) or, on PostgreSQL, as the canonical text the database
# renders (the fast form).
_SEQ, _PREV, _HASH, _CONTENT = 0, 1, 2, 3
# The JSON columns come as text and are parsed here, by the C parser, not per row by the
# driver's codec: several times faster on a long trail.
_EXACT_COLUMNS = [
    _EVENT.seq,
    _EVENT.prev_hash,
    _EVENT.hash,
    *(
        cast(_EVENT[name], Text).label(name) if name in _JSON_COLUMNS else _EVENT[name]
        for name in _SORTED_FIELDS
    ),
]
_JSON_AT = tuple(_SORTED_FIELDS.index(name) for name in _JSON_COLUMNS)


def _exact_content(row: Sequence[Any]) -> bytes:
    values = list(row[_CONTENT:])
    for at in _JSON_AT:
        if values[at] is not None:
            values[at] = json.loads(values[at])
    return _canonical(values)


def _rendered_content(row: Sequence[Any]) -> bytes:
    return row[_CONTENT].encode()


_UUID_FIELDS = ("actor_user_id", "actor_organisation_id", "actor_municipality_id")


def _sql_text(value: str) -> Any:
    """A constant of ours as an inline SQL string (no bind parameter: the statement runs on
    the driver with only its own three parameters)."""
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _rendered_by_postgresql(columns: Mapping[str, Any]) -> Any:
    """The canonical form of an event (its `columns` by name), rendered by PostgreSQL:
    decoding one text column costs the driver a fraction of decoding fifteen values. It is
    only a fast path. A rendering that differs from `_canonical` (non-ASCII text, a
    timestamp on a whole second, JSON written some other way) fails the HMAC, and that
    event is then checked on its exact values (`_walk_rows`, `_StagedEventsOnPostgreSQL`).
    A false match would need a rendering that maps two different values to one text; each
    piece below is injective (the lists on the elements `track` lets in)."""
    null = _sql_text("null")

    def as_json_text(column: Any) -> Any:
        return func.coalesce(cast(func.to_json(column), Text), null)

    def as_compact_list(column: Any) -> Any:
        # The stored JSON as SQLAlchemy wrote it, '["a", "b"]', with its separators closed
        # up. When no element holds a comma, a quote or a backslash, every '", "' is a
        # separator, so this is exact, and an edit that renders to the same text changes no
        # value. `track` refuses any other list ([", "] and [","] would render alike), so
        # every event the application writes has such lists.
        return func.coalesce(
            func.replace(cast(column, Text), _sql_text('", "'), _sql_text('","')), null
        )

    def as_quoted(column: Any) -> Any:
        # a UUID's text is 36 hex digits and dashes: nothing in it needs escaping
        quoted = _sql_text('"').op("||")(cast(column, Text)).op("||")(_sql_text('"'))
        return func.coalesce(quoted, null)

    def as_isoformat(column: Any) -> Any:
        utc = func.timezone(_sql_text("UTC"), column)
        clock = func.to_char(utc, _sql_text('YYYY-MM-DD"T"HH24:MI:SS.US'))
        return func.concat(_sql_text('"'), clock, _sql_text('+00:00"'))

    special: dict[str, Callable[[Any], Any]] = {
        "seq": lambda column: func.coalesce(cast(column, Text), null),
        "status_code": lambda column: func.coalesce(cast(column, Text), null),
        "occurred_at": as_isoformat,
        "resource_ids": as_compact_list,
        "fields": as_compact_list,
        **dict.fromkeys(_UUID_FIELDS, as_quoted),
    }
    # `||`, not concat(): every piece is non-null already, and the operator costs the
    # database less per row than the variadic function (with the UUIDs quoted as text, a
    # seventh less of the rendering's time)
    rendered = None
    for name in _SORTED_FIELDS:
        opening = "{" if rendered is None else ","
        piece = _sql_text(f'{opening}"{name}":').op("||")(
            special.get(name, as_json_text)(columns[name])
        )
        rendered = piece if rendered is None else rendered.op("||")(piece)
    return rendered.op("||")(_sql_text("}"))


# The upper bound of a walk to the end of the trail, however long it grows meanwhile.
_TO_THE_END = 2**63 - 1


def _range_statement(*columns: Any) -> Any:
    seq = _EVENT.seq
    return (
        sa_select(*columns)
        .where(seq > bindparam("after"), seq <= bindparam("until"))
        .order_by(seq)
        .limit(bindparam("batch"))
    )


_EXACT = _range_statement(*_EXACT_COLUMNS)
# On PostgreSQL the batches are read through asyncpg itself: SQLAlchemy's result layer
# costs more per row than hashing it does. The values are the same Python types.
_DRIVER_EXACT_SQL = str(_EXACT.compile(dialect=asyncpg.dialect()))  # "… $1 … $2 … LIMIT $3"
_DRIVER_FAST_SQL = str(
    _range_statement(
        _EVENT.seq, _EVENT.prev_hash, _EVENT.hash, _rendered_by_postgresql(_EVENT)
    ).compile(dialect=asyncpg.dialect())
)
# The sealer's statements on PostgreSQL (_StagedEventsOnPostgreSQL): staged events with their
# rendered form (seq null), and the move of a batch of them into the trail by their links.
_DRIVER_STAGED_SQL = str(
    _STAGED_BATCH.with_only_columns(
        _STAGED.c.id,
        _STAGED.c.mac,
        _rendered_by_postgresql({**_STAGED.c, "seq": null()}),
    ).compile(dialect=asyncpg.dialect())
)


def _move_statement() -> Any:
    links = (
        func.unnest(
            bindparam("ids", type_=ARRAY(BigInteger)),
            bindparam("seqs", type_=ARRAY(BigInteger)),
            bindparam("prevs", type_=ARRAY(Text)),
            bindparam("hashes", type_=ARRAY(Text)),
        )
        .table_valued("staged_id", "seq", "prev_hash", "hash")
        .render_derived(name="link")
    )
    chained = (*_STAGED_CONTENT, "seq", "prev_hash", "hash")
    moved = (
        delete(_STAGED)
        .where(_STAGED.c.id == links.c.staged_id)
        .returning(*(_STAGED.c[n] for n in _STAGED_CONTENT), *(links.c[n] for n in chained[-3:]))
        .cte("moved")
    )
    return insert(AuditEvent.__table__).from_select(chained, sa_select(*moved.c))


_DRIVER_MOVE_SQL = str(_move_statement().compile(dialect=asyncpg.dialect()))

# Held events into the trail, by arrays: JSON columns travel as text, as SQLAlchemy's own
# JSON type sends them (json.dumps), and are cast back.
_WRITTEN = (*_STAGED_CONTENT, "seq", "prev_hash", "hash")


def _held_values() -> Any:
    """The held events' rows, from one array per column."""
    columns = AuditEvent.__table__.c
    arrays = [
        bindparam(name, type_=ARRAY(Text if name in _JSON_COLUMNS else columns[name].type))
        for name in _WRITTEN
    ]
    held = func.unnest(*arrays).table_valued(*_WRITTEN).render_derived(name="held")
    return sa_select(
        *(cast(held.c[name], JSON) if name in _JSON_COLUMNS else held.c[name] for name in _WRITTEN)
    )


_MOVE_HEAD = update(_HEAD).values(
    seq=bindparam("head_seq"), hash=bindparam("head_hash"), key_id=bindparam("head_key")
)


def _write_statement() -> Any:
    written = insert(AuditEvent.__table__).from_select(_WRITTEN, _held_values())
    head = _MOVE_HEAD.where(_HEAD.c.id == literal_column("1"))
    return head.add_cte(written.cte("written"))  # PostgreSQL runs it in full, though unread


def _write_after_statement() -> Any:
    """The held events and the head moved past them, only if the head is still where this
    process last left it: one statement, so in autocommit it is all or nothing. The head's
    row lock is taken by the UPDATE; a head another round moved meanwhile no longer matches
    (PostgreSQL checks the row again once that round's lock is released), and nothing is
    written. Returns the number of heads moved: 1 or 0."""
    moved = (
        _MOVE_HEAD.where(
            _HEAD.c.id == literal_column("1"),
            _HEAD.c.seq == bindparam("after_seq"),
            _HEAD.c.hash == bindparam("after_hash"),
            _HEAD.c.key_id == bindparam("head_key"),
        )
        .returning(_HEAD.c.id)
        .cte("moved")
    )
    ahead = sa_select(moved.c.id).exists()
    written = insert(AuditEvent.__table__).from_select(_WRITTEN, _held_values().where(ahead))
    return sa_select(func.count()).select_from(moved).add_cte(written.cte("written"))


def _driver_statement(statement: Any) -> tuple[str, tuple[str, ...]]:
    compiled = statement.compile(dialect=asyncpg.dialect())
    return str(compiled), tuple(compiled.positiontup or ())


_DRIVER_WRITE_SQL, _DRIVER_WRITE_ORDER = _driver_statement(_write_statement())
_DRIVER_WRITE_AFTER_SQL, _DRIVER_WRITE_AFTER_ORDER = _driver_statement(_write_after_statement())


@dataclass(frozen=True)
class _Reader:
    """How a walk reads events: in batches, and one event's exact values."""

    connection: Any
    on_driver: bool

    async def batch(self, after: int, size: int) -> tuple[Sequence[Any], bool]:
        """The next rows, and whether they carry the rendered (fast) form."""
        if self.on_driver:
            return await self._driver(_DRIVER_FAST_SQL, after, _TO_THE_END, size), True
        values = {"after": after, "until": _TO_THE_END, "batch": size}
        return (await self.connection.execute(_EXACT, values)).all(), False

    async def exact(self, seq: int) -> list[Sequence[Any]]:
        """The event `seq` as values (a list of one row; none if it is gone meanwhile)."""
        if self.on_driver:
            return await self._driver(_DRIVER_EXACT_SQL, seq - 1, seq, 1)
        values = {"after": seq - 1, "until": seq, "batch": 1}
        return list((await self.connection.execute(_EXACT, values)).all())

    async def _driver(self, sql: str, *args: int) -> Sequence[Any]:
        raw = await self.connection.get_raw_connection()
        return await raw.driver_connection.fetch(sql, *args)


@dataclass
class _Walk:
    """Where the walk along the chain has got to."""

    prev: str = GENESIS
    expected: int | None = None  # the next sequence number; None before the first sealed event
    at_checkpoint: str | None = None
    key: bytes | None = None  # the key of this stretch of the chain; None before the first
    left: list[bytes] = field(default_factory=list)  # the keys of the stretches before it


# What _walk_batch found, when it did not stop at a row to be checked on its exact values.
_HELD, _BROKE = -1, -2


def _walk_batch(
    rows: Sequence[Any],
    start: int,
    content: Callable[[Sequence[Any]], bytes],
    walk: _Walk,
    result: Verification,
    keys: AuditKeys,
    checkpoint: Checkpoint | None,
    rendered: bool = False,
) -> int:
    """Check rows[start:] in order, carrying the walk on: _HELD if they all hold; _BROKE (and
    `result` says why) at the first event that does not; with `rendered` contents, the index
    of a row whose rendering failed its hash, to be checked again on its exact values (the
    walk stands just before it). A plain loop: it runs once per event of the trail."""
    prev, expected, key = walk.prev, walk.expected, walk.key
    checkpoint_seq = checkpoint.seq if checkpoint else None
    for index in range(start, len(rows)):
        row = rows[index]
        seq, sealed = row[_SEQ], row[_HASH]
        if sealed is None and expected is None:
            result.unchained += 1  # written before the chain existed
            continue
        if expected is None:
            expected = seq
        if seq != expected:
            result.broken(expected, f"event {expected} is missing (the next is {seq})")
            return _BROKE
        if sealed is None:
            result.broken(seq, NOT_SEALED)
            return _BROKE
        if row[_PREV] != prev:
            result.broken(seq, "prev_hash does not match the event before it")
            return _BROKE
        body = content(row)
        signer = key
        if body.startswith(_MARKER):  # chained under the key it moves the chain to
            signer = _successor(body, keys)
            if signer is None or signer in walk.left:
                where = "back to an audit key it left" if signer else "to an audit key not given"
                result.broken(seq, f"the event moves the chain {where}")
                return _BROKE
        elif key is None:  # the first chained event: under whichever key it holds
            signer = next((k for k in keys.every if _mac(k, prev, body) == sealed), None)
        if signer is None or _mac(signer, prev, body) != sealed:
            if rendered:
                walk.prev, walk.expected, walk.key = prev, expected, key
                return index
            result.broken(seq, "the contents do not match the hash")
            return _BROKE
        if signer is not key:
            if key is not None:
                walk.left.append(key)
            key = signer
        if seq == checkpoint_seq:
            walk.at_checkpoint = sealed
        prev, expected = sealed, seq + 1
        result.checked += 1
    walk.prev, walk.expected, walk.key = prev, expected, key
    return _HELD


def _successor(body: bytes, keys: AuditKeys) -> bytes | None:
    """The key a marker event moves the chain to, if it is one of `keys`."""
    try:
        named = orjson.loads(body)["resource_ids"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return keys.by_id.get(named[0]) if isinstance(named, list) and named else None


async def count_events(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(AuditEvent))).one()


async def verify(
    session: AsyncSession,
    keys: AuditKeys,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 2_000,
) -> Verification:
    """Walk the chain in order; name the first event that does not hold, and why. The
    session must be one of its own: the walk reads one snapshot of the trail."""
    await _one_snapshot(session)
    result = Verification(ok=True)
    walk = _Walk()
    if await _walk_trail(session, keys, checkpoint, batch, walk, result, progress):
        await _finish(session, result, walk, keys, checkpoint)
    await _check_staged(await session.connection(), keys, result, batch)
    return result


async def _one_snapshot(session: AsyncSession) -> None:
    """Start the walk's transaction so that every statement of it reads the same snapshot.

    Events go on being chained while a walk runs (the auditor polling it adds some). Were
    each statement to see the latest, the head row read at the end could be ahead of the
    last event read, and the walk would report events as gone that were only new. On
    PostgreSQL the default (READ COMMITTED) gives each statement its own snapshot; the
    SQLite driver begins no transaction for reads at all."""
    if session.in_transaction():
        raise RuntimeError("verify reads one snapshot of the trail: give it a session of its own")
    if session.bind.dialect.name == "postgresql":
        options = {"isolation_level": "REPEATABLE READ"}
        connection = await session.connection(execution_options=options)
        # The driver's transaction begins with the first statement sent through SQLAlchemy,
        # and the snapshot is taken then; the walk's batches go to the driver directly.
        await connection.exec_driver_sql("SELECT 1")
        return
    connection = await session.connection()
    await connection.exec_driver_sql("BEGIN")


async def _check_staged(connection: Any, keys: AuditKeys, result: Verification, batch: int) -> None:
    """Events committed but not yet chained hold only if each carries its MAC."""
    async for rows in _staged_events(connection, keys).batches(batch):
        for staged_id, content in rows:
            if content is None:
                if result.ok:
                    result.ok = False
                    result.reason = f"staged event {staged_id} does not carry the audit key's MAC"
                return
            result.staged += 1


async def _walk_trail(
    session: AsyncSession,
    keys: AuditKeys,
    checkpoint: Checkpoint | None,
    batch: int,
    walk: _Walk,
    result: Verification,
    progress: Callable[[int], None] | None,
) -> bool:
    """Every event in order; False (and `result` says why) at the first that does not hold."""
    connection = await session.connection()
    reader = _Reader(connection, on_driver=connection.dialect.name == "postgresql")
    # The next batch is asked for before this one is hashed, so the database prepares it
    # meanwhile; only one statement is ever in flight on the connection.
    upcoming = asyncio.ensure_future(reader.batch(-1, batch))
    try:
        while True:
            rows, rendered = await upcoming
            if not rows:
                return True
            upcoming = asyncio.ensure_future(reader.batch(rows[-1][_SEQ], batch))
            await asyncio.sleep(0)  # the next query goes out now
            if progress:
                progress(len(rows))
            held = await _walk_rows(
                rows, rendered, reader, upcoming, walk, result, keys, checkpoint
            )
            if not held:
                return False
    finally:
        await asyncio.wait([upcoming])  # never leave a statement running on the session
        if not upcoming.cancelled():
            upcoming.exception()  # a failed read ahead that was never needed is not an error


async def _walk_rows(
    rows: Sequence[Any],
    rendered: bool,
    reader: _Reader,
    upcoming: asyncio.Future[Any],
    walk: _Walk,
    result: Verification,
    keys: AuditKeys,
    checkpoint: Checkpoint | None,
) -> bool:
    """One batch; an event whose rendering failed its hash is read again as values and
    checked on those (after the upcoming batch has arrived: one statement at a time)."""
    content = _rendered_content if rendered else _exact_content
    start = 0
    while (
        stop := _walk_batch(rows, start, content, walk, result, keys, checkpoint, rendered)
    ) >= 0:
        await asyncio.wait([upcoming])
        exact = await reader.exact(rows[stop][_SEQ])
        result.rechecked += 1
        if not exact:
            result.broken(rows[stop][_SEQ], "the event was deleted during verification")
            return False
        if _walk_batch(exact, 0, _exact_content, walk, result, keys, checkpoint) == _BROKE:
            return False
        start = stop + 1
    return stop != _BROKE


async def _finish(
    session: AsyncSession,
    result: Verification,
    walk: _Walk,
    keys: AuditKeys,
    checkpoint: Checkpoint | None,
) -> Verification:
    """After a walk to the end of the trail: the head row and the checkpoint must agree, and
    the trail must end under the current key (every process moves it there as it starts)."""
    prev, expected = walk.prev, walk.expected
    last = (expected - 1) if expected is not None else 0
    result.head_seq, result.head_hash = last, prev
    if walk.key is not None and walk.key != keys.current:
        return result.broken(
            last + 1,
            "the trail ends under an earlier audit key: its move to the current key is "
            "gone, or no server with the current key has started yet",
        )
    head = await session.get(AuditChainHead, 1)
    if head is not None and expected is not None and (head.seq, head.hash) != (last, prev):
        return result.broken(
            last + 1, f"the chain head records event {head.seq}; events after {last} are gone"
        )
    if checkpoint is not None:
        if checkpoint.seq > last:
            return result.broken(
                last + 1,
                f"the checkpoint holds event {checkpoint.seq}; the trail ends at {last} "
                "(its tail was truncated)",
            )
        if walk.at_checkpoint != checkpoint.hash:
            return result.broken(checkpoint.seq, "the event differs from the checkpoint")
    return result
