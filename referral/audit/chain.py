"""The hash chain over audit events: sealing at commit, verification, checkpoints.

Each event's hash is HMAC-SHA256(audit key, prev_hash || canonical JSON of the event), with
the audit key kept outside the database. Sealing happens in the committing transaction:
one UPDATE of the single `audit_chain_head` row reserves contiguous sequence numbers and
locks the head until commit, so concurrent writers are chained one after another and the
chain cannot fork (ADR 0008).
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring_ascii as _quote
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Text, bindparam, cast, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import asyncpg
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.models import AuditChainHead, AuditEvent
from referral.models.base import utcnow

GENESIS = "0" * 64
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


def _json(value: Any) -> str:
    """One value as `json.dumps` writes it (ASCII-escaped), for the values an event holds:
    None, bools, ints, strings, lists of strings, datetimes and UUIDs (as strings)."""
    encode = _BY_TYPE.get(type(value))
    if encode is not None:
        return encode(value)
    if isinstance(value, list):
        return _json_list(value)
    if hasattr(value, "isoformat"):
        return _quote(value.isoformat())
    return _quote(str(value))


def _json_list(value: list[Any]) -> str:
    return "[" + ",".join(map(_json, value)) + "]"


_BY_TYPE: dict[type, Callable[[Any], str]] = {
    type(None): lambda _value: "null",
    bool: lambda value: "true" if value else "false",
    int: str,
    str: _quote,
    list: _json_list,
    datetime: lambda value: '"' + value.isoformat() + '"',
    uuid.UUID: lambda value: '"' + str(value) + '"',
}

# The canonical form is json.dumps(document, sort_keys=True, separators=(",", ":")); it is
# written out by hand because verification encodes tens of millions of events, and
# tests/test_audit_chain.py holds it to json.dumps byte for byte.
_SORTED_FIELDS = tuple(sorted(CHAINED_FIELDS))
_KEYS = tuple(f'"{name}":' for name in _SORTED_FIELDS)


def _canonical(values: Sequence[Any]) -> bytes:
    """`values` in _SORTED_FIELDS order."""
    parts = [key + _json(value) for key, value in zip(_KEYS, values, strict=True)]
    return ("{" + ",".join(parts) + "}").encode()


def canonical(event: AuditEvent) -> bytes:
    return _canonical([getattr(event, name) for name in _SORTED_FIELDS])


def compute_hash(key: bytes, prev_hash: str, event: Any) -> str:
    return _values_hash(key, prev_hash, [getattr(event, name) for name in _SORTED_FIELDS])


def _values_hash(key: bytes, prev_hash: str, values: Sequence[Any]) -> str:
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...).hexdigest()
    return hmac.digest(key, prev_hash.encode() + _canonical(values), "sha256").hex()


def pending_event(**values: Any) -> SimpleNamespace:
    """An event to seal: a plain record with the columns of `audit_event`. Not an ORM
    object: one is built on every audited request, and the table model's instrumented
    constructor cost more than the rest of the event (ADR 0012)."""
    event = SimpleNamespace(seq=None, occurred_at=utcnow(), prev_hash=None, hash=None, **values)
    if vars(event).keys() != _STORED_NAMES:
        raise TypeError(f"an audit event has exactly the columns {sorted(_STORED_NAMES)}")
    return event


def track(session: AsyncSession, event: AuditEvent | SimpleNamespace) -> None:
    """Hold an event, in order, to be sealed and inserted when the transaction commits.

    It is not added to the session yet: an autoflush would insert it unsealed, and the
    table accepts no UPDATE afterwards.
    """
    session.info.setdefault(PENDING_KEY, []).append(event)


_HEAD = AuditChainHead.__table__
_RESERVE = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq + bindparam("count"))
    .returning(_HEAD.c.seq, _HEAD.c.hash)
)
_ADVANCE = update(_HEAD).where(_HEAD.c.id == 1).values(hash=bindparam("head_hash"))
_INSERT = insert(AuditEvent.__table__)
_STORED = tuple(column.name for column in AuditEvent.__table__.columns)
_STORED_NAMES = frozenset(_STORED)


async def seal_pending(session: AsyncSession, key: bytes) -> int:
    """Chain this transaction's events onto the head. Call last, just before commit.

    Three prepared Core statements, no ORM unit of work: this runs on every audited
    request (ADR 0012)."""
    pending: list[Any] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return 0
    connection = await session.connection()
    last_seq, prev = (await connection.execute(_RESERVE, {"count": len(pending)})).one()
    for offset, event in enumerate(pending):
        event.seq = last_seq - len(pending) + 1 + offset
        event.prev_hash = prev
        event.hash = compute_hash(key, prev, event)
        prev = event.hash
    await connection.execute(
        _INSERT, [{name: getattr(event, name) for name in _STORED} for event in pending]
    )
    await connection.execute(_ADVANCE, {"head_hash": prev})
    return len(pending)


@dataclass
class Verification:
    ok: bool
    checked: int = 0
    unchained: int = 0
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
# The JSON columns come as text and are parsed here, by the C parser, not per row by the
# driver's codec: several times faster on a long trail.
_VERIFIED_COLUMNS = [
    cast(AuditEvent.__table__.c[name], Text).label(name)
    if name in _JSON_COLUMNS
    else AuditEvent.__table__.c[name]
    for name in (*_SORTED_FIELDS, "prev_hash", "hash")
]
_JSON_AT = tuple(_SORTED_FIELDS.index(name) for name in _JSON_COLUMNS)
_SEQ, _PREV, _HASH = _SORTED_FIELDS.index("seq"), len(_SORTED_FIELDS), len(_SORTED_FIELDS) + 1


async def _batches(session: AsyncSession, batch: int) -> AsyncIterator[Sequence[Any]]:
    """The trail in order, in batches of rows: the chained fields in _SORTED_FIELDS order
    (the JSON columns as text), then prev_hash and hash. No ORM objects: verification reads
    tens of millions."""
    connection = await session.connection()
    fetch = _fetch_driver if connection.dialect.name == "postgresql" else _fetch_core
    rows = await fetch(connection, -1, batch)
    while rows:
        yield rows
        rows = await fetch(connection, rows[-1][_SEQ], batch)


async def _fetch_core(connection: Any, after: int, batch: int) -> Sequence[Any]:
    seq = AuditEvent.__table__.c.seq
    statement = sa_select(*_VERIFIED_COLUMNS).where(seq > after).order_by(seq).limit(batch)
    return (await connection.execute(statement)).all()


# On PostgreSQL the batches are read through asyncpg itself: SQLAlchemy's result layer
# costs more per row than hashing it does. The values are the same Python types.
def _compiled_for_asyncpg() -> str:
    seq = AuditEvent.__table__.c.seq
    statement = (
        sa_select(*_VERIFIED_COLUMNS)
        .where(seq > bindparam("after"))
        .order_by(seq)
        .limit(bindparam("batch"))
    )
    return str(statement.compile(dialect=asyncpg.dialect()))  # "… seq > $1 … LIMIT $2"


_DRIVER_SQL = _compiled_for_asyncpg()


async def _fetch_driver(connection: Any, after: int, batch: int) -> Sequence[Any]:
    raw = await connection.get_raw_connection()
    return await raw.driver_connection.fetch(_DRIVER_SQL, after, batch)


@dataclass
class _Walk:
    prev: str = GENESIS
    expected: int | None = None  # the next sequence number; None before the first sealed event
    at_checkpoint: str | None = None


def _walk_batch(
    rows: Sequence[Any],
    walk: _Walk,
    result: Verification,
    key: bytes,
    checkpoint: Checkpoint | None,
) -> bool:
    """Check one batch in order, carrying the walk on; False (and `result` says why) at the
    first event that does not hold. A plain loop: it runs once per event of the trail."""
    prev, expected = walk.prev, walk.expected
    loads = json.loads
    checkpoint_seq = checkpoint.seq if checkpoint else None
    for row in rows:
        seq, sealed = row[_SEQ], row[_HASH]
        if sealed is None and expected is None:
            result.unchained += 1  # written before the chain existed
            continue
        if expected is None:
            expected = seq
        if seq != expected:
            result.broken(expected, f"event {expected} is missing (the next is {seq})")
            return False
        if sealed is None:
            result.broken(seq, "the event is not sealed into the chain")
            return False
        if row[_PREV] != prev:
            result.broken(seq, "prev_hash does not match the event before it")
            return False
        values = list(row[:_PREV])
        for at in _JSON_AT:
            if values[at] is not None:
                values[at] = loads(values[at])
        if _values_hash(key, prev, values) != sealed:
            result.broken(seq, "the contents do not match the hash")
            return False
        if seq == checkpoint_seq:
            walk.at_checkpoint = sealed
        prev, expected = sealed, seq + 1
        result.checked += 1
    walk.prev, walk.expected = prev, expected
    return True


async def count_events(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(AuditEvent))).one()


async def verify(
    session: AsyncSession,
    key: bytes,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 20_000,
) -> Verification:
    """Walk the chain in order; name the first event that does not hold, and why."""
    result = Verification(ok=True)
    walk = _Walk()
    batches = _batches(session, batch)
    try:
        async for rows in batches:
            if progress:
                progress(len(rows))
            if not _walk_batch(rows, walk, result, key, checkpoint):
                return result
    finally:
        await batches.aclose()
    prev, expected, at_checkpoint = walk.prev, walk.expected, walk.at_checkpoint
    last = (expected - 1) if expected is not None else 0
    result.head_seq, result.head_hash = last, prev
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
        if at_checkpoint != checkpoint.hash:
            return result.broken(checkpoint.seq, "the event differs from the checkpoint")
    return result
