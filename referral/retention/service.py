"""Purging a case's identity and text (retention and erasure), legal holds, subject access."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.models import (
    BreakGlassGrant,
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    CaseTransition,
    Intervention,
    PanelDecision,
    SupportPlan,
)
from referral.models.base import utcnow
from referral.retention.policy import RetentionPolicy

# Every table holding identity or free text about a case's subject, keyed by its case id.
CASE_PARTS = (
    CaseNote,
    CaseScreening,
    CaseAssessment,
    CaseConsent,
    PanelDecision,
    SupportPlan,
    Intervention,
    CaseReview,
    CaseTransition,
    BreakGlassGrant,
)


def _purged_values(model) -> dict:
    """Each encrypted column emptied: NULL where allowed, else the empty string."""
    values = {}
    for column in model.__table__.columns:
        if column.name.endswith("_enc"):
            values[column.name] = None if column.nullable else ""
    return values


async def purge_case(session: AsyncSession, case: CaseFile) -> list[str]:
    """Remove identity, notes and free text; keep the statistical skeleton. Irreversible."""
    now = utcnow()
    touched = []
    case_values = _purged_values(CaseFile) | {
        "blind_index": None,
        "purged_at": now,
        "updated_at": now,
    }
    case_values.pop("legal_hold_reason_enc")  # a hold's reason is not the subject's data
    await session.exec(
        update(CaseFile)
        .where(col(CaseFile.id) == case.id)
        .values(**case_values, version=CaseFile.version + 1)
    )
    touched += [f"case_file.{name}" for name in case_values if name.endswith("_enc")]
    for model in CASE_PARTS:
        values = _purged_values(model)
        await session.exec(update(model).where(model.case_id == case.id).values(**values))
        touched += [f"{model.__tablename__}.{name}" for name in values]
    await session.flush()
    await session.refresh(case)
    return sorted(touched)


@dataclass(frozen=True)
class Due:
    case_id: uuid.UUID
    closed_at: datetime
    due_at: datetime


async def due_for_purge(
    session: AsyncSession, policy: RetentionPolicy, as_of: datetime
) -> list[Due]:
    """Closed, not yet purged, not on legal hold, past their retention period. Only the
    columns the rule reads are loaded: at a national scale, every closed case is a candidate."""
    candidates = (
        await session.exec(
            select(CaseFile.id, CaseFile.closed_at, CaseFile.assessment_at)
            .where(
                col(CaseFile.closed_at).is_not(None),
                col(CaseFile.purged_at).is_(None),
                col(CaseFile.legal_hold_at).is_(None),
            )
            .order_by(CaseFile.closed_at)
        )
    ).all()
    due = []
    for case in candidates:
        when = policy.purge_due(case)
        if when is not None and when <= as_of:
            due.append(Due(case.id, case.closed_at, when))
    return due


async def run_retention(
    session: AsyncSession,
    policy: RetentionPolicy,
    as_of: datetime,
    apply: bool,
    audit_event: Callable[[uuid.UUID, list[str]], None],
    progress: Callable[[int], None] | None = None,
) -> list[Due]:
    due = await due_for_purge(session, policy, as_of)
    if not apply:
        return due
    for item in due:
        case = await session.get(CaseFile, item.case_id)
        touched = await purge_case(session, case)
        audit_event(case.id, touched)
        if progress:
            progress(1)
    return due
