"""Queries for cases, always through the actor's scope (a SQL filter, never a post-filter)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import Request
from sqlalchemy import case, func, literal, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.authz.dependencies import Access
from referral.errors import NotFound, PreconditionFailed
from referral.models import (
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    Intervention,
    PanelDecision,
    SupportPlan,
)
from referral.models.base import utcnow
from referral.pagination import PageParams, keyset, split_page


async def case_in_scope(
    session: AsyncSession, access: Access, case_id: uuid.UUID, request: Request | None = None
) -> CaseFile:
    """The case if the actor may act on it, else 404. A case reached only through a
    break-glass grant marks the request, so its audit events say so."""
    in_own_scope = case(
        (access.scope_without_break_glass(), literal(True)), else_=literal(False)
    ).label("in_own_scope")
    row = (
        await session.exec(
            select(CaseFile, in_own_scope).where(CaseFile.id == case_id, access.filter())
        )
    ).first()
    if row is None:
        raise NotFound("No such case.")
    found, own = row
    if not own and request is not None:
        request.state.audit_purpose = "break_glass"
    return found


async def part_of_case(session: AsyncSession, model: Any, part_id: uuid.UUID, case_id: uuid.UUID):
    part = (
        await session.exec(select(model).where(model.id == part_id, model.case_id == case_id))
    ).first()
    if part is None:
        raise NotFound("No such record on this case.")
    return part


async def touch_case(
    session: AsyncSession, case: CaseFile, expected_version: int | None, **values: Any
) -> int:
    """Bump the case's version with `values`; with an expected version, only if it matches.

    Every write to a case or its parts goes through here, so writers serialise on the case
    row and each response can carry the case's new ETag.
    """
    stmt = update(CaseFile).where(col(CaseFile.id) == case.id)
    if expected_version is not None:
        stmt = stmt.where(col(CaseFile.version) == expected_version)
    stmt = stmt.values(**values, updated_at=utcnow(), version=CaseFile.version + 1).returning(
        CaseFile.version
    )
    new_version = (await session.exec(stmt)).scalar_one_or_none()
    if new_version is None:
        raise PreconditionFailed("The case was changed by someone else; read it again.")
    for name, value in values.items():
        setattr(case, name, value)
    case.version = new_version
    return new_version


@dataclass
class CaseParts:
    screening: CaseScreening | None
    decisions: list[PanelDecision]
    consents: list[CaseConsent]
    plan: SupportPlan | None
    interventions: list[Intervention]
    reviews: list[CaseReview]
    notes: list[CaseNote]
    assessments: list[CaseAssessment]


async def _all(session: AsyncSession, stmt) -> list:
    return list((await session.exec(stmt)).all())


async def load_parts(
    session: AsyncSession, case_id: uuid.UUID, sections: frozenset[str]
) -> CaseParts:
    by_case = lambda model: select(model).where(model.case_id == case_id)  # noqa: E731
    return CaseParts(
        screening=(await session.exec(by_case(CaseScreening))).first(),
        decisions=await _all(session, by_case(PanelDecision).order_by(PanelDecision.id)),
        consents=await _all(session, by_case(CaseConsent).order_by(CaseConsent.id)),
        plan=(await session.exec(by_case(SupportPlan))).first(),
        interventions=await _all(session, by_case(Intervention).order_by(Intervention.id)),
        reviews=await _all(session, by_case(CaseReview).order_by(CaseReview.due_on)),
        notes=await notes_in(session, case_id, sections),
        assessments=await assessments_in(session, case_id, sections),
    )


async def notes_in(session: AsyncSession, case_id: uuid.UUID, sections: frozenset[str]):
    if not sections:
        return []
    return await _all(
        session,
        select(CaseNote)
        .where(CaseNote.case_id == case_id, col(CaseNote.section).in_(sections))
        .order_by(CaseNote.id),
    )


async def assessments_in(session: AsyncSession, case_id: uuid.UUID, sections: frozenset[str]):
    if not sections:
        return []
    return await _all(
        session,
        select(CaseAssessment)
        .where(CaseAssessment.case_id == case_id, col(CaseAssessment.section).in_(sections))
        .order_by(CaseAssessment.id),
    )


async def possible_rereferrals(
    session: AsyncSession, access: Access, case: CaseFile
) -> list[CaseFile]:
    """Earlier or parallel referrals of the same person, within the actor's own scope."""
    return await _all(
        session,
        select(CaseFile)
        .where(
            CaseFile.blind_index == case.blind_index,
            CaseFile.id != case.id,
            access.filter(),
        )
        .order_by(CaseFile.id),
    )


def overdue_count():
    today = date.today()
    return (
        select(func.count())
        .select_from(CaseReview)
        .where(
            CaseReview.case_id == CaseFile.id,
            col(CaseReview.done_on).is_(None),
            CaseReview.due_on < today,
        )
        .correlate(CaseFile)
        .scalar_subquery()
    )


async def list_cases(
    session: AsyncSession,
    access: Access,
    params: PageParams,
    *,
    states: list[str] | None,
    urgency: str | None,
    municipality_id: uuid.UUID | None,
    overdue_only: bool,
) -> tuple[list[tuple[CaseFile, int]], uuid.UUID | None]:
    overdue = overdue_count().label("overdue")
    stmt = select(CaseFile, overdue).where(access.filter())
    if states:
        stmt = stmt.where(col(CaseFile.state).in_(states))
    if urgency:
        stmt = stmt.where(CaseFile.urgency == urgency)
    if municipality_id:
        stmt = stmt.where(CaseFile.municipality_id == municipality_id)
    if overdue_only:
        stmt = stmt.where(overdue_count() > 0)
    rows = await _all(session, keyset(stmt, CaseFile.id, params))
    return split_page(rows, params, lambda row: row[0].id)
