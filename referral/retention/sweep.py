"""Operational records past their use: expired sign-in sessions and old replay records.

Neither holds case data, but both say who was signed in or submitted when, so they are
kept no longer than they serve (policies/data-inventory.yaml, `session` and `replay`):
- a session is useless once expired (the actor lookup refuses it); its refresh tokens go
  with it (ON DELETE CASCADE);
- an idempotency record only has to outlive the client's retries; after
  `REFERRAL_IDEMPOTENCY_REPLAY_HOURS` a reused key is a new submission.
`referral retention run --apply` deletes them with the closed-case purge, one audit event
per table it emptied rows from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.models import AuthSession, IdempotencyRecord
from referral.models.base import utcnow


@dataclass(frozen=True)
class Sweep:
    sessions: int
    replay_records: int

    def by_table(self) -> dict[str, int]:
        return {"auth_session": self.sessions, "idempotency_record": self.replay_records}


def _conditions(as_of: datetime, replay_hours: int) -> tuple:
    return (
        (AuthSession, col(AuthSession.expires_at) <= as_of),
        (
            IdempotencyRecord,
            col(IdempotencyRecord.created_at) <= as_of - timedelta(hours=replay_hours),
        ),
    )


async def sweep(session: AsyncSession, as_of: datetime, replay_hours: int, apply: bool) -> Sweep:
    """Count what is past its use; with `apply`, delete it in the caller's transaction.

    A pretended date (`retention run --as-of`) later than now changes nothing here: whether a
    session has expired is a fact of the clock, and sweeping ahead of it would sign people
    out and let a retried referral in twice."""
    counts = []
    for model, past_use in _conditions(min(as_of, utcnow()), replay_hours):
        table = model.__table__
        if apply:
            counts.append((await session.exec(delete(table).where(past_use))).rowcount)
        else:
            counts.append(
                (
                    await session.exec(select(func.count()).select_from(table).where(past_use))
                ).scalar_one()
            )
    return Sweep(*counts)
