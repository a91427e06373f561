"""Business rules for cases: intake, the lifecycle, and what is recorded along the way.

Services flush, never commit. Every write touches the case row (repository.touch_case), so
writers serialise on it and each response carries the case's new ETag.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.authz.dependencies import Access
from referral.cases import lifecycle
from referral.cases.repository import insert_case, insert_row, part_of_case, touch_case
from referral.cases.schemas import (
    AssessmentCreate,
    ConsentCreate,
    InterventionCreate,
    InterventionUpdate,
    ReferralCreate,
    ReferralReceipt,
    ReviewRecord,
    TransitionCreate,
    age_band,
    age_on,
    reference_of,
)
from referral.cases.workflow import Workflow
from referral.crypto import KeyRing, blind_index, open_field, seal_field, sealed_columns
from referral.errors import Conflict, Forbidden, PreconditionFailed, invalid_field
from referral.models import (
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    CaseTransition,
    IdempotencyRecord,
    Intervention,
    SupportPlan,
)
from referral.models.base import utcnow, uuid7
from referral.models.enums import ConsentGiver, ReviewKind


@dataclass(frozen=True)
class CaseKeys:
    ring: KeyRing
    blind_key: bytes
    workflow: Workflow
    # while the blind index moves to a new key (`referral keys reindex`): the old one
    previous_blind_key: bytes | None = None

    def blind_indexes(self, given_name: str, family_name: str, date_of_birth: date) -> list[str]:
        """The person's blind index under the key, then under the previous key if any."""
        return [
            blind_index(
                key, given_name=given_name, family_name=family_name, date_of_birth=date_of_birth
            )
            for key in (self.blind_key, self.previous_blind_key)
            if key
        ]

    def blind_indexes_of(self, case: Any) -> list[str] | None:
        """The blind indexes of a case's subject, from its sealed identity; None once that
        identity has been purged."""
        given, family, born = (
            open_field(self.ring, case, name)
            for name in ("given_name", "family_name", "date_of_birth")
        )
        if not (given and family and born):
            return None
        return self.blind_indexes(given, family, date.fromisoformat(born))


# --- intake -------------------------------------------------------------------------------


def request_fingerprint(body: ReferralCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def _claim_statement(dialect: str) -> Any:
    """`claim_idempotency_key`'s INSERT, built once per dialect: building it with its
    values inline each time was a tenth of an intake's CPU."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = IdempotencyRecord.__table__
    names = ("user_id", "key", "request_hash", "status_code", "response", "created_at")
    return (
        insert(table)
        .values({name: bindparam(name, type_=table.c[name].type) for name in names})
        .on_conflict_do_nothing(index_elements=[table.c.user_id, table.c.key])
        .returning(table.c.key)
    )


async def claim_idempotency_key(
    session: AsyncSession, claim: dict[str, Any]
) -> IdempotencyRecord | None:
    """None if this request is the first with its key; the earlier record otherwise.
    `claim`: the record (`idempotency_values`) with this request's receipt.

    The claim is an INSERT ... ON CONFLICT DO NOTHING of the record: it commits with the
    case, or neither does, so a committed record always holds the answer to replay. A
    concurrent duplicate waits for the first transaction, then finds its committed record
    and replays it.
    """
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    connection = await session.connection()
    claimed = await connection.execute(_claim_statement(dialect), claim)
    if claimed.first() is not None:
        return None
    earlier = await session.get(IdempotencyRecord, (claim["user_id"], claim["key"]))
    if earlier is None or earlier.request_hash != claim["request_hash"]:
        raise invalid_field(
            "Idempotency-Key",
            "reused with another body",
            where="header",
            kind="idempotency_key_reused",
            detail="This Idempotency-Key was already used with a different request.",
        )
    return earlier


@dataclass(frozen=True, slots=True)
class NewReferral:
    """A referral as it will be written: the receipt its referrer is answered with, and the
    case's columns (`repository.insert_case`'s values), sealed and indexed."""

    receipt: ReferralReceipt
    case: dict[str, Any]


def new_referral(keys: CaseKeys, access: Access, body: ReferralCreate) -> NewReferral:
    """What `body` becomes when `access`'s actor refers it now; nothing is written."""
    actor = access.actor
    if actor.municipality_id is None:
        raise Forbidden("Only an actor of a municipality can refer.")
    now = utcnow()
    case_id = uuid7()
    receipt = ReferralReceipt(
        id=case_id,
        reference=reference_of(case_id),
        stage=keys.workflow.referrer_stages[keys.workflow.initial],
        submitted_at=now,
    )
    subject = body.subject
    indexes = keys.blind_indexes(subject.given_name, subject.family_name, subject.date_of_birth)
    sealed = sealed_columns(
        keys.ring,
        CaseFile.__tablename__,
        case_id,
        given_name=subject.given_name,
        family_name=subject.family_name,
        date_of_birth=subject.date_of_birth.isoformat(),
        address=subject.address,
        contacts=subject.contacts,
        guardian=subject.guardian.model_dump_json() if subject.guardian else None,
        languages=json.dumps(subject.languages),
        description=body.description,
        indicators=json.dumps([str(i) for i in body.indicators]),
    )
    case = dict(
        id=case_id,
        municipality_id=actor.municipality_id,
        referrer_user_id=actor.user_id,
        referrer_organisation_id=actor.organisation_id,
        referrer_sector=body.referrer_sector or actor.agency,
        primary_concern=body.primary_concern,
        urgency=body.urgency,
        state=keys.workflow.initial,
        submitted_at=now,
        subject_gender=subject.gender,
        subject_age_band=age_band(subject.date_of_birth, now.date()),
        blind_index=indexes[0],
        same_person_as=indexes[-1],
        created_at=now,
        updated_at=now,
        **sealed,
    )
    return NewReferral(receipt, case)


def fields_given(body: ReferralCreate) -> set[str]:
    """The fields a referral's body gave, as its audit event names them."""
    return body.model_fields_set | {f"subject.{name}" for name in body.subject.model_fields_set}


def idempotency_values(
    user_id: uuid.UUID, key: str, body: ReferralCreate, receipt: ReferralReceipt
) -> dict[str, Any]:
    """The idempotency record that claims `key` for this request, with its receipt."""
    return {
        "user_id": user_id,
        "key": key,
        "request_hash": request_fingerprint(body),
        "status_code": 201,
        "response": receipt.model_dump(mode="json"),
        "created_at": receipt.submitted_at,
    }


async def submit_referral(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    body: ReferralCreate,
    idempotency_key: str,
) -> tuple[ReferralReceipt, bool]:
    """The receipt, and whether it was created now (False: replayed)."""
    referral = new_referral(keys, access, body)
    claim = idempotency_values(access.actor.user_id, idempotency_key, body, referral.receipt)
    earlier = await claim_idempotency_key(session, claim)
    if earlier is not None:
        return ReferralReceipt.model_validate(earlier.response), False
    await insert_case(session, **referral.case)
    return referral.receipt, True


# --- the lifecycle ------------------------------------------------------------------------


def facts_of(found: Any, post_exit_reviews_recorded: bool) -> lifecycle.CaseFacts:
    """The lifecycle's facts about a case, from `repository.case_with_facts`."""
    return lifecycle.CaseFacts(
        screening_recorded=bool(found.screening),
        assessment_recorded=bool(found.assessment),
        panel_decision=found.decision,
        consent_valid=bool(found.consent),
        plan_has_intervention=bool(found.intervention) and bool(found.plan),
        post_exit_reviews_recorded=post_exit_reviews_recorded,
    )


async def _post_exit_reviews_done(session: AsyncSession, keys: CaseKeys, case: CaseFile) -> bool:
    reviews = (
        await session.exec(
            select(CaseReview).where(
                CaseReview.case_id == case.id,
                CaseReview.kind == ReviewKind.post_exit,
                col(CaseReview.outcome).is_distinct_from("cancelled"),
                CaseReview.due_on > case.monitoring_at.date(),
            )
        )
    ).all()
    wanted = len(keys.workflow.post_exit_review_months)
    return len(reviews) >= wanted and all(r.done_on is not None for r in reviews)


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Transitioned:
    record: Any  # the transition's record (read-only)
    # Whether it also wrote other records of the case (post-exit reviews scheduled or
    # cancelled): records read before it are then out of date.
    records_changed: bool


@dataclass(frozen=True, slots=True)
class Move:
    """A transition as decided, before anything is written: the case's new values
    (`repository.touch_case`'s), the transition's record (every column), and whether it
    schedules or cancels post-exit reviews."""

    case_values: dict[str, Any]
    record: dict[str, Any]
    schedules: bool
    cancels: bool


def decide_transition(
    keys: CaseKeys,
    access: Access,
    case: Any,
    found: Any,
    body: TransitionCreate,
    post_exit_reviews_recorded: bool,
) -> Move:
    """What moving `case` as `body` asks writes, if the lifecycle allows it now; else 409
    (or 422 for an exit reason the workflow does not know). `found`: the lifecycle's facts
    about the case, read with it (`repository.case_with_facts`)."""
    workflow = keys.workflow
    request = lifecycle.TransitionRequest(
        to=body.to,
        outcome=body.outcome,
        exit_reason=body.exit_reason,
        immediate_risk=body.immediate_risk,
    )
    if body.exit_reason is not None and body.exit_reason not in workflow.exit_reasons:
        raise invalid_field(
            "exit_reason", f"must be one of {list(workflow.exit_reasons)}", kind="enum"
        )
    facts = facts_of(found, post_exit_reviews_recorded)
    verdict = lifecycle.evaluate(workflow, access.actor.role, case.state, request, facts)
    if not verdict.ok:
        detail = (
            f"The case cannot go from {case.state} to {body.to} yet: {', '.join(verdict.unmet)}."
            if verdict.unmet
            else f"There is no transition from {case.state} to {body.to} for your role."
        )
        raise Conflict(
            detail,
            extra={"state": case.state, "allowed": verdict.allowed, "unmet": verdict.unmet},
        )
    spec = verdict.spec
    now = utcnow()
    values: dict = {"state": spec.to, f"{spec.to}_at": now}
    if spec.to == workflow.terminal:
        values["closure_outcome"] = body.outcome
    if body.exit_reason is not None and spec.to == "monitoring":
        values["exit_reason"] = body.exit_reason
    record_id = uuid7()
    record = dict(
        id=record_id,
        case_id=case.id,
        from_state=case.state,
        to_state=spec.to,
        outcome=body.outcome,
        exit_reason=body.exit_reason,
        immediate_risk=body.immediate_risk,
        actor_user_id=access.actor.user_id,
        actor_role=access.actor.role,
        occurred_at=now,
        **sealed_columns(keys.ring, CaseTransition.__tablename__, record_id, reason=body.reason),
    )
    schedules = "schedule_post_exit_reviews" in spec.effects
    return Move(values, record, schedules=schedules, cancels=case.state == "monitoring")


def transition_fields(body: TransitionCreate, to_state: str) -> list[str]:
    """The fields a transition's audit event names."""
    return ["state", f"{to_state}_at", *(["reason"] if body.reason else [])]


async def transition(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    found: Any,
    body: TransitionCreate,
    expected_version: int,
) -> Transitioned:
    """Move `case` on. `found`: the lifecycle's facts about it, read with it
    (`case_with_facts`)."""
    if case.version != expected_version:  # the precondition first (RFC 9110 §13.2.2)
        raise PreconditionFailed("The case was changed by someone else; read it again.")
    reviews_done = case.monitoring_at is not None and await _post_exit_reviews_done(
        session, keys, case
    )
    move = decide_transition(keys, access, case, found, body, reviews_done)
    await touch_case(session, case, expected_version, **move.case_values)
    record = await insert_row(session, CaseTransition, **move.record)
    workflow = keys.workflow
    if move.schedules:
        now = move.record["occurred_at"]
        for months in workflow.post_exit_review_months:
            session.add(
                CaseReview(
                    case_id=case.id,
                    kind=ReviewKind.post_exit,
                    months_after_exit=months,
                    due_on=add_months(now.date(), months),
                )
            )
    if move.cancels:
        await _cancel_open_post_exit_reviews(session, case.id)
    await session.flush()
    return Transitioned(record, records_changed=move.schedules or move.cancels)


async def _cancel_open_post_exit_reviews(session: AsyncSession, case_id: uuid.UUID) -> None:
    open_reviews = (
        await session.exec(
            select(CaseReview).where(
                CaseReview.case_id == case_id,
                CaseReview.kind == ReviewKind.post_exit,
                col(CaseReview.done_on).is_(None),
            )
        )
    ).all()
    for review in open_reviews:
        review.outcome = "cancelled"
        review.done_on = date.today()
        review.version += 1
        session.add(review)


# --- what is recorded about a case ----------------------------------------------------------


def _require_state(case: CaseFile, states: tuple[str, ...], what: str) -> None:
    if case.state not in states:
        raise Conflict(
            f"{what} is recorded while the case is {' or '.join(states)}; it is {case.state}.",
            extra={"state": case.state},
        )


async def add_note(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    section: str,
    body: str,
    kind: str,
    expected_version: int | None,
) -> CaseNote:
    note = CaseNote(
        case_id=case.id,
        section=section,
        kind=kind,
        author_user_id=access.actor.user_id,
        author_agency=access.actor.agency,
        body_enc="",
    )
    seal_field(keys.ring, note, "body", body)
    session.add(note)
    await touch_case(session, case, expected_version)
    await session.flush()
    return note


def writable_section(access: Access, requested: str | None) -> str:
    sections = access.writable_sections
    if requested is None:
        default = access.policy.agency_sections.get(access.actor.agency)
        requested = default if default in sections else None
    if requested is None or requested not in sections:
        raise Forbidden("Your agency does not write in that section.")
    return requested


async def put_screening(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    summary: str,
    reviewed: bool,
    expected_version: int,
) -> CaseScreening:
    _require_state(case, ("screening",), "Screening")
    screening = (
        await session.exec(select(CaseScreening).where(CaseScreening.case_id == case.id))
    ).first()
    if screening is None:
        screening = CaseScreening(case_id=case.id, summary_enc="", recorded_by=access.actor.user_id)
    screening.rereferrals_reviewed = reviewed
    screening.recorded_by = access.actor.user_id
    screening.recorded_at = utcnow()
    seal_field(keys.ring, screening, "summary", summary)
    session.add(screening)
    await touch_case(session, case, expected_version)
    await session.flush()
    return screening


async def add_assessment(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    body: AssessmentCreate,
    expected_version: int | None,
) -> CaseAssessment:
    _require_state(
        case, ("screening", "assessment", "panel", "support", "monitoring"), "An assessment"
    )
    section = writable_section(access, body.section)
    assessment = CaseAssessment(
        case_id=case.id,
        section=section,
        author_user_id=access.actor.user_id,
        author_agency=access.actor.agency,
        factors_enc="",
    )
    seal_field(keys.ring, assessment, "factors", json.dumps([f.model_dump() for f in body.factors]))
    seal_field(keys.ring, assessment, "summary", body.summary)
    session.add(assessment)
    await touch_case(session, case, expected_version)
    await session.flush()
    return assessment


async def add_consent(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    body: ConsentCreate,
    expected_version: int | None,
) -> CaseConsent:
    _require_state(case, ("consent_pending", "support"), "Consent")
    born = date.fromisoformat(open_field(keys.ring, case, "date_of_birth") or "")
    if age_on(born, body.given_on) < 18 and body.given_by is not ConsentGiver.guardian:
        raise invalid_field(
            "given_by",
            "a guardian must consent",
            kind="guardian_required",
            detail="The subject was under 18 on that date: a guardian must consent.",
        )
    if body.given_on > date.today():
        raise invalid_field("given_on", "may not be in the future", kind="future_date")
    consent = CaseConsent(
        case_id=case.id,
        given_by=body.given_by,
        scope=body.scope,
        given_on=body.given_on,
        recorded_by=access.actor.user_id,
    )
    seal_field(keys.ring, consent, "guardian_name", body.guardian_name)
    session.add(consent)
    await touch_case(session, case, expected_version)
    await session.flush()
    return consent


async def withdraw_consent(
    session: AsyncSession,
    case: CaseFile,
    consent_id: uuid.UUID,
    withdrawn_on: date,
    expected_version: int,
) -> CaseConsent:
    consent = await part_of_case(session, CaseConsent, consent_id, case.id)
    _check_part_version(consent, expected_version)
    if consent.withdrawn_on is not None:
        raise Conflict("This consent was already withdrawn.")
    consent.withdrawn_on = withdrawn_on
    consent.version += 1
    session.add(consent)
    await touch_case(session, case, None)
    await session.flush()
    return consent


def _check_part_version(part, expected_version: int) -> None:
    if part.version != expected_version:
        raise PreconditionFailed("The record was changed by someone else; read it again.")


async def put_plan(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    goals: str,
    expected_version: int,
) -> SupportPlan:
    _require_state(case, ("consent_pending", "support"), "A support plan")
    plan = (await session.exec(select(SupportPlan).where(SupportPlan.case_id == case.id))).first()
    if plan is None:
        plan = SupportPlan(case_id=case.id, goals_enc="", created_by=access.actor.user_id)
    plan.updated_at = utcnow()
    seal_field(keys.ring, plan, "goals", goals)
    session.add(plan)
    await touch_case(session, case, expected_version)
    await session.flush()
    return plan


async def add_intervention(
    session: AsyncSession,
    case: CaseFile,
    body: InterventionCreate,
    expected_version: int | None,
) -> Intervention:
    _require_state(case, ("consent_pending", "support"), "An intervention")
    if (
        await session.exec(select(SupportPlan.id).where(SupportPlan.case_id == case.id))
    ).first() is None:
        raise Conflict("Write the support plan before adding interventions to it.")
    intervention = Intervention(
        case_id=case.id,
        type=body.type,
        agency=body.agency,
        start_date=body.start_date,
        end_date=body.end_date,
    )
    session.add(intervention)
    await touch_case(session, case, expected_version)
    await session.flush()
    return intervention


async def update_intervention(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    intervention_id: uuid.UUID,
    body: InterventionUpdate,
    expected_version: int,
) -> tuple[Intervention, list[str]]:
    intervention = await part_of_case(session, Intervention, intervention_id, case.id)
    access.require_agency(intervention)
    _check_part_version(intervention, expected_version)
    changes = body.model_dump(exclude_unset=True)
    for field in ("status",):
        if field in changes and changes[field] is None:
            raise invalid_field(field, "may not be null")
    for field, value in changes.items():
        if field == "outcome":
            seal_field(keys.ring, intervention, "outcome", value)
        else:
            setattr(intervention, field, value)
    intervention.version += 1
    intervention.updated_at = utcnow()
    session.add(intervention)
    await touch_case(session, case, None)
    await session.flush()
    return intervention, sorted(changes)


async def add_review(
    session: AsyncSession,
    case: CaseFile,
    due_on: date,
    expected_version: int | None,
) -> CaseReview:
    _require_state(case, ("support",), "A plan review")
    review = CaseReview(case_id=case.id, kind=ReviewKind.plan, due_on=due_on)
    session.add(review)
    await touch_case(session, case, expected_version)
    await session.flush()
    return review


async def record_review(
    session: AsyncSession,
    keys: CaseKeys,
    access: Access,
    case: CaseFile,
    review_id: uuid.UUID,
    body: ReviewRecord,
    expected_version: int,
) -> CaseReview:
    review = await part_of_case(session, CaseReview, review_id, case.id)
    _check_part_version(review, expected_version)
    if review.done_on is not None:
        raise Conflict("This review is already recorded.")
    review.done_on = body.done_on
    review.outcome = body.outcome
    review.recorded_by = access.actor.user_id
    review.version += 1
    seal_field(keys.ring, review, "notes", body.notes)
    session.add(review)
    await touch_case(session, case, None)
    await session.flush()
    return review
