"""The hash chain over audit events: sealing at commit, verification, checkpoints.

Each event's hash is HMAC-SHA256(audit key, prev_hash || canonical JSON of the event), with
the audit key kept outside the database. Sealing happens in the committing transaction:
one UPDATE of the single `audit_chain_head` row reserves contiguous sequence numbers and
locks the head until commit, so concurrent writers are chained one after another and the
chain cannot fork (ADR 0008).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.models import AuditChainHead, AuditEvent

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


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, bool, list)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def canonical(event: AuditEvent) -> bytes:
    document = {name: _plain(getattr(event, name)) for name in CHAINED_FIELDS}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def compute_hash(key: bytes, prev_hash: str, event: AuditEvent) -> str:
    return hmac.new(key, prev_hash.encode() + canonical(event), hashlib.sha256).hexdigest()


def track(session: AsyncSession, event: AuditEvent) -> None:
    """Hold an event, in order, to be sealed and inserted when the transaction commits.

    It is not added to the session yet: an autoflush would insert it unsealed, and the
    table accepts no UPDATE afterwards.
    """
    session.info.setdefault(PENDING_KEY, []).append(event)


async def seal_pending(session: AsyncSession, key: bytes) -> int:
    """Chain this transaction's events onto the head. Call last, just before commit."""
    pending: list[AuditEvent] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return 0
    reserved = (
        await session.exec(
            update(AuditChainHead)
            .where(col(AuditChainHead.id) == 1)
            .values(seq=AuditChainHead.seq + len(pending))
            .returning(AuditChainHead.seq, AuditChainHead.hash)
        )
    ).one()
    last_seq, prev = reserved
    for offset, event in enumerate(pending):
        event.seq = last_seq - len(pending) + 1 + offset
        event.prev_hash = prev
        event.hash = compute_hash(key, prev, event)
        prev = event.hash
    session.add_all(pending)
    await session.flush()
    await session.exec(update(AuditChainHead).where(col(AuditChainHead.id) == 1).values(hash=prev))
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


async def _events(session: AsyncSession, batch: int) -> AsyncIterator[AuditEvent]:
    after = -1
    while True:
        rows = (
            await session.exec(
                select(AuditEvent)
                .where(AuditEvent.seq > after)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq
        session.expunge_all()


async def count_events(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(AuditEvent))).one()


async def verify(
    session: AsyncSession,
    key: bytes,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
) -> Verification:
    """Walk the chain in order; name the first event that does not hold, and why."""
    result = Verification(ok=True)
    prev, expected = GENESIS, None
    at_checkpoint: str | None = None
    async for event in _events(session, batch):
        if progress:
            progress(1)
        if event.hash is None and expected is None:
            result.unchained += 1  # written before the chain existed
            continue
        if expected is None:
            expected = event.seq
        if event.seq != expected:
            return result.broken(expected, f"event {expected} is missing (the next is {event.seq})")
        if event.hash is None:
            return result.broken(event.seq, "the event is not sealed into the chain")
        if event.prev_hash != prev:
            return result.broken(event.seq, "prev_hash does not match the event before it")
        if compute_hash(key, prev, event) != event.hash:
            return result.broken(event.seq, "the contents do not match the hash")
        if checkpoint and event.seq == checkpoint.seq:
            at_checkpoint = event.hash
        prev, expected = event.hash, event.seq + 1
        result.checked += 1
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
