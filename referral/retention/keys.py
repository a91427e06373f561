"""Key rotation: re-encrypt every sealed column with the newest key of the ring; compute
every blind index anew under the blind-index key.

Resumable: rows are rewritten in batches, each committed, and a row already under the new
key is left as it is, so an interrupted run continues where it stopped. Afterwards the old
key can be removed (REFERRAL_DATA_KEYS, REFERRAL_BLIND_INDEX_KEY_PREVIOUS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import and_, func, or_, update
from sqlmodel import col, select

from referral.audit.chain import AuditKeys, seal_pending, track
from referral.crypto import KeyRing, blind_index
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
    audit_keys: AuditKeys,
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
                await seal_pending(session, audit_keys)
            rotated[table] = rotated.get(table, 0) + len(rows)
            if progress:
                progress(len(rows))
    return rotated


# --- the blind index ------------------------------------------------------------------------

_INDEXED = col(CaseFile.blind_index).is_not(None)  # purged cases have none, and need none


async def count_indexed(sessionmaker) -> int:
    async with sessionmaker() as session:
        return (
            await session.exec(select(func.count()).select_from(CaseFile).where(_INDEXED))
        ).one()


@dataclass
class Reindexed:
    checked: int = 0
    changed: int = 0


async def reindex(
    sessionmaker,
    ring: KeyRing,
    blind_key: bytes,
    audit_keys: AuditKeys,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Reindexed:
    """Every case's blind index computed anew from its identity under `blind_key`, in
    batches by id, each committed with a `keys.reindex` event naming the cases it changed."""
    done, after = Reindexed(), None
    identity = (CaseFile.given_name_enc, CaseFile.family_name_enc, CaseFile.date_of_birth_enc)
    while True:
        async with sessionmaker() as session, session.begin():
            query = select(CaseFile.id, CaseFile.blind_index, *identity).where(_INDEXED)
            if after is not None:
                query = query.where(col(CaseFile.id) > after)
            rows = (await session.exec(query.order_by(CaseFile.id).limit(batch))).all()
            if not rows:
                return done
            changed = []
            for case_id, stored, *sealed in rows:
                given, family, born = (
                    ring.decrypt(token, table="case_file", column=column, row_id=case_id)
                    for token, column in zip(
                        sealed, ("given_name", "family_name", "date_of_birth"), strict=True
                    )
                )
                index = blind_index(
                    blind_key,
                    given_name=given,
                    family_name=family,
                    date_of_birth=date.fromisoformat(born),
                )
                if index != stored:
                    # only if still as read: a case purged meanwhile keeps no index
                    await session.exec(
                        update(CaseFile)
                        .where(col(CaseFile.id) == case_id, col(CaseFile.blind_index) == stored)
                        .values(blind_index=index)
                    )
                    changed.append(case_id)
            if changed:
                track(
                    session,
                    AuditEvent(
                        action="keys.reindex",
                        outcome="allowed",
                        resource_type="case_file",
                        resource_ids=[str(case_id) for case_id in changed],
                        fields=["blind_index"],
                        purpose="blind_index_key",
                    ),
                )
                await seal_pending(session, audit_keys)
        after = rows[-1][0]
        done.checked += len(rows)
        done.changed += len(changed)
        if progress:
            progress(len(rows))
