"""Key rotation: re-encrypt every sealed column with the newest key of the ring.

Resumable: rows are re-encrypted in batches, each committed, and a row whose every value
is already under the newest key is skipped, so an interrupted run continues where it
stopped. Afterwards the old key can be removed from REFERRAL_DATA_KEYS.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, func, or_, update
from sqlmodel import col, select

from referral.audit.chain import seal_pending, track
from referral.crypto import KeyRing
from referral.models import AuditEvent, CaseFile
from referral.retention.service import CASE_PARTS

SEALED_MODELS = (CaseFile, *CASE_PARTS)


def sealed_columns(model) -> list[str]:
    return [c.name for c in model.__table__.columns if c.name.endswith("_enc")]


def _stale(model, ring: KeyRing):
    """Rows holding a value under an older key."""
    current = f"v{ring.current}.%"
    return or_(
        *(
            and_(
                getattr(model, c).is_not(None),
                getattr(model, c) != "",
                ~getattr(model, c).like(current),
            )
            for c in sealed_columns(model)
        )
    )


async def count_stale(sessionmaker, ring: KeyRing) -> int:
    total = 0
    async with sessionmaker() as session:
        for model in SEALED_MODELS:
            total += (
                await session.exec(
                    select(func.count()).select_from(model).where(_stale(model, ring))
                )
            ).one()
    return total


async def rotate(
    sessionmaker,
    ring: KeyRing,
    audit_key: bytes,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    rotated: dict[str, int] = {}
    for model in SEALED_MODELS:
        table, columns = model.__tablename__, sealed_columns(model)
        while True:
            async with sessionmaker() as session, session.begin():
                rows = (
                    await session.exec(
                        select(model).where(_stale(model, ring)).order_by(model.id).limit(batch)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    values = {}
                    for name in columns:
                        token = getattr(row, name)
                        if token and KeyRing.version_of(token) != ring.current:
                            field = name.removesuffix("_enc")
                            plain = ring.decrypt(token, table=table, column=field, row_id=row.id)
                            values[name] = ring.encrypt(
                                plain, table=table, column=field, row_id=row.id
                            )
                    await session.exec(
                        update(model).where(col(model.id) == row.id).values(**values)
                    )
                track(
                    session,
                    AuditEvent(
                        action="keys.rotate",
                        outcome="allowed",
                        resource_type=table,
                        resource_ids=[str(r.id) for r in rows],
                        purpose=f"to_key_version={ring.current}",
                    ),
                )
                await seal_pending(session, audit_key)
            rotated[table] = rotated.get(table, 0) + len(rows)
            if progress:
                progress(len(rows))
    return rotated
