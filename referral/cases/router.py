"""/api/v1/referrals and /api/v1/cases: HTTP only; rules in service.py, queries in repository.py."""

import uuid
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import col, select

from referral import audit
from referral.authz.dependencies import Access, authorize
from referral.cases import (
    lean_intake,
    lean_list,
    lean_read,
    lean_transition,
    repository,
    service,
    views,
)
from referral.cases.break_glass import request_access as request_break_glass
from referral.cases.dependencies import KeysDep, idempotency_key, optional_version
from referral.cases.schemas import (
    AssessmentCreate,
    AssessmentOut,
    BreakGlassCreate,
    BreakGlassOut,
    CaseListItem,
    ConsentCreate,
    ConsentOut,
    ConsentWithdrawal,
    CoordinatorCaseView,
    InformationCreate,
    InterventionCreate,
    InterventionOut,
    InterventionUpdate,
    NoteCreate,
    NoteOut,
    PanelCaseView,
    PlanOut,
    PlanPut,
    ReferralCreate,
    ReferralReceipt,
    ReferrerCaseView,
    ReviewCreate,
    ReviewOut,
    ReviewRecord,
    ScreeningOut,
    ScreeningPut,
    TransitionCreate,
    WorklistItem,
    reference_of,
)
from referral.concurrency import expected_version, set_etag
from referral.crypto import open_field
from referral.db import SessionDep
from referral.errors import Conflict
from referral.models import CaseAssessment, CaseFile, CaseNote, CaseReview
from referral.models.enums import Urgency
from referral.pagination import Page, PageParams, page_params
from referral.routing import API_PREFIX, ProblemRoute, answered_first

router = APIRouter(prefix=API_PREFIX, tags=["cases"], route_class=ProblemRoute)

CaseView = ReferrerCaseView | CoordinatorCaseView | PanelCaseView
OptionalVersion = Annotated[int | None, Depends(optional_version)]


def _can(action: str) -> Any:
    return Annotated[Access, Depends(authorize("case", action))]


async def _case(session, access: Access, case_id: uuid.UUID, request: Request) -> CaseFile:
    return await repository.case_in_scope(session, access, case_id, request)


def _shows_rereferrals(access: Access) -> bool:
    return access.grant.view == "coordinator"


async def _view(
    session, keys, access: Access, case: CaseFile, parts=None
) -> ReferrerCaseView | views.CaseDocument:
    """The case as `access` sees it; with `parts`, from those records, still current."""
    if access.grant.view == "referrer":
        return views.referrer_view(keys.workflow, case)
    if parts is None:
        rereferrals_for = access if _shows_rereferrals(access) else None
        parts = await repository.load_parts(
            session, case, access.readable_sections, rereferrals_for
        )
    return await _detail(session, keys, access, case, parts)


async def _detail(session, keys, access: Access, case, parts) -> views.CaseDocument:
    """The detail view of a case from its records. While the blind index moves to a new key,
    the possible re-referrals are looked up under the person's index under both keys: the
    one statement that read the records matched the case's own index only."""
    if keys.previous_blind_key is not None and parts.rereferrals is not None:
        indexes = keys.blind_indexes_of(case)
        if indexes is not None:
            parts.rereferrals = await repository.rereferrals_across_keys(
                session, access, case.id, indexes
            )
    return views.detail_view(keys.ring, keys.workflow, case, parts, access.readable_sections)


async def _read(session, keys, access: Access, case_id: uuid.UUID, request: Request):
    """The case and its view for a route that only reads: a referrer's view needs the case
    alone; every other view gets the case and its records in one statement."""
    if access.grant.view == "referrer":
        case = await repository.case_to_read(session, access, case_id, request)
        return case, await _view(session, keys, access, case)
    case, parts = await repository.case_with_parts(
        session, access, case_id, request, _shows_rereferrals(access)
    )
    return case, await _detail(session, keys, access, case, parts)


def _audit(session, request: Request, action: str, ids: list, fields=()) -> None:
    audit.record(
        session,
        request,
        action=f"case.{action}",
        resource_type="case",
        resource_ids=ids,
        fields=fields,
    )


# --- intake and reading ---------------------------------------------------------------------


@router.post(
    "/referrals",
    response_model=ReferralReceipt,
    status_code=201,
    summary="Refer a person (Idempotency-Key required)",
)
@answered_first(lean_intake.answer)
async def submit_referral(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    body: ReferralCreate,
    access: _can("create"),
    key: Annotated[str, Depends(idempotency_key)],
) -> ReferralReceipt:
    receipt, created = await service.submit_referral(session, keys, access, body, key)
    _audit(
        session,
        request,
        "create" if created else "create_replayed",
        [receipt.id],
        service.fields_given(body),
    )
    response.headers["Location"] = f"/api/v1/cases/{receipt.id}"
    return receipt


@router.get(
    "/cases",
    response_model=Page[ReferrerCaseView] | Page[CaseListItem],
    summary="Cases in your scope (referrers: your own referrals)",
)
@answered_first(lean_list.answer)
async def list_cases(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    page: Annotated[PageParams, Depends(page_params)],
    access: _can("list"),
    state: Annotated[list[str] | None, Query(max_length=8)] = None,
    urgency: Urgency | None = None,
    municipality_id: uuid.UUID | None = None,
    overdue_reviews: bool = False,
) -> Any:
    rows, cursor = await repository.list_cases(
        session,
        access,
        page,
        states=state,
        urgency=urgency,
        municipality_id=municipality_id,
        overdue_only=overdue_reviews,
    )
    _audit(session, request, "list", [repository.listed_id(row) for row in rows])
    if access.grant.view == "referrer":
        cases = [repository.listed_case(row) for row in rows]
        items = [views.referrer_view(keys.workflow, case) for case in cases]
        return views.page_response(Page[ReferrerCaseView](items=items, next_cursor=cursor))
    return views.list_page_response(keys.ring, rows, cursor)


@router.get("/cases/{case_id}", response_model=CaseView, summary="A case, as your role sees it")
@answered_first(lean_read.answer)
async def read_case(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    access: _can("read"),
) -> Any:
    case, view = await _read(session, keys, access, case_id, request)
    _audit(session, request, "read", [case.id], views.fields_of(view))
    return views.case_response(view, case.version)


@router.post(
    "/cases/{case_id}/transitions",
    response_model=CaseView,
    summary="Move the case through its lifecycle (If-Match required)",
)
@answered_first(lean_transition.answer)
async def transition_case(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: TransitionCreate,
    access: _can("transition"),
) -> Any:
    # The answer's records are read with the case, in one statement. They are still current
    # when the version check passes (every write to a case bumps its version), unless the
    # transition itself wrote records.
    case, found, parts = await repository.case_with_facts(
        session,
        access,
        case_id,
        request,
        parts=access.grant.view != "referrer",
        rereferrals=_shows_rereferrals(access),
    )
    done = await service.transition(
        session, keys, access, case, found, body, expected_version(request)
    )
    record = done.record
    _audit(
        session,
        request,
        "transition",
        [case.id, record.id],
        service.transition_fields(body, record.to_state),
    )
    current = None if done.records_changed else parts
    return views.case_response(await _view(session, keys, access, case, current), case.version)


# --- notes and information ------------------------------------------------------------------


@router.post(
    "/cases/{case_id}/information",
    status_code=201,
    summary="A referrer adds information to their referral",
)
async def add_information(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: InformationCreate,
    access: _can("add_information"),
    version: OptionalVersion,
) -> dict[str, Any]:
    case = await _case(session, access, case_id, request)
    if case.state == keys.workflow.terminal:
        raise Conflict("The referral is closed.")
    note = await service.add_note(
        session, keys, access, case, "general", body.body, "information", version
    )
    _audit(session, request, "add_information", [case.id, note.id], ["body"])
    set_etag(response, case.version)
    return {"id": note.id, "created_at": note.created_at}


@router.get("/cases/{case_id}/notes", response_model=list[NoteOut])
async def list_notes(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    access: _can("read_notes"),
) -> list[NoteOut]:
    case = await _case(session, access, case_id, request)
    notes = await repository.sectioned_records(session, CaseNote, case.id, access.readable_sections)
    _audit(session, request, "read_notes", [case.id, *(n.id for n in notes)])
    return [views.note_out(keys.ring, n) for n in notes]


@router.post("/cases/{case_id}/notes", response_model=NoteOut, status_code=201)
async def add_note(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: NoteCreate,
    access: _can("add_note"),
    version: OptionalVersion,
) -> NoteOut:
    case = await _case(session, access, case_id, request)
    section = service.writable_section(access, body.section)
    note = await service.add_note(session, keys, access, case, section, body.body, "note", version)
    _audit(session, request, "add_note", [case.id, note.id], ["section", "body"])
    set_etag(response, case.version)
    return views.note_out(keys.ring, note)


# --- screening and assessments --------------------------------------------------------------


@router.put(
    "/cases/{case_id}/screening",
    response_model=ScreeningOut,
    summary="Record the screening (If-Match required)",
)
async def put_screening(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: ScreeningPut,
    access: _can("screen"),
) -> ScreeningOut:
    case = await _case(session, access, case_id, request)
    screening = await service.put_screening(
        session,
        keys,
        access,
        case,
        body.summary,
        body.rereferrals_reviewed,
        expected_version(request),
    )
    _audit(session, request, "screen", [case.id, screening.id], body.model_fields_set)
    set_etag(response, case.version)
    return ScreeningOut(
        summary=body.summary,
        rereferrals_reviewed=screening.rereferrals_reviewed,
        recorded_by=screening.recorded_by,
        recorded_at=screening.recorded_at,
    )


@router.get("/cases/{case_id}/assessments", response_model=list[AssessmentOut])
async def list_assessments(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    access: _can("read_assessments"),
) -> list[AssessmentOut]:
    case = await _case(session, access, case_id, request)
    rows = await repository.sectioned_records(
        session, CaseAssessment, case.id, access.readable_sections
    )
    _audit(session, request, "read_assessments", [case.id, *(a.id for a in rows)])
    return [views.assessment_out(keys.ring, a) for a in rows]


@router.post("/cases/{case_id}/assessments", response_model=AssessmentOut, status_code=201)
async def add_assessment(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: AssessmentCreate,
    access: _can("assess"),
    version: OptionalVersion,
) -> AssessmentOut:
    case = await _case(session, access, case_id, request)
    assessment = await service.add_assessment(session, keys, access, case, body, version)
    _audit(session, request, "assess", [case.id, assessment.id], body.model_fields_set)
    set_etag(response, case.version)
    return views.assessment_out(keys.ring, assessment)


# --- consent, plan, interventions -----------------------------------------------------------


def _consent_out(keys, consent) -> ConsentOut:
    return ConsentOut(
        id=consent.id,
        given_by=consent.given_by,
        guardian_name=open_field(keys.ring, consent, "guardian_name"),
        scope=consent.scope,
        given_on=consent.given_on,
        withdrawn_on=consent.withdrawn_on,
        version=consent.version,
    )


@router.post("/cases/{case_id}/consents", response_model=ConsentOut, status_code=201)
async def add_consent(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: ConsentCreate,
    access: _can("consent"),
    version: OptionalVersion,
) -> ConsentOut:
    case = await _case(session, access, case_id, request)
    consent = await service.add_consent(session, keys, access, case, body, version)
    _audit(session, request, "consent", [case.id, consent.id], body.model_fields_set)
    set_etag(response, case.version)
    return _consent_out(keys, consent)


@router.post(
    "/cases/{case_id}/consents/{consent_id}/withdrawal",
    response_model=ConsentOut,
    summary="Record that consent was withdrawn (If-Match: the consent's version)",
)
async def withdraw_consent(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    consent_id: uuid.UUID,
    body: ConsentWithdrawal,
    access: _can("consent"),
) -> ConsentOut:
    case = await _case(session, access, case_id, request)
    consent = await service.withdraw_consent(
        session, case, consent_id, body.withdrawn_on, expected_version(request)
    )
    _audit(session, request, "withdraw_consent", [case.id, consent.id], ["withdrawn_on"])
    set_etag(response, consent.version)
    return _consent_out(keys, consent)


@router.put(
    "/cases/{case_id}/plan",
    response_model=PlanOut,
    summary="Write the support plan (If-Match required)",
)
async def put_plan(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: PlanPut,
    access: _can("manage_plan"),
) -> PlanOut:
    case = await _case(session, access, case_id, request)
    plan = await service.put_plan(
        session, keys, access, case, body.goals, expected_version(request)
    )
    _audit(session, request, "manage_plan", [case.id, plan.id], ["goals"])
    set_etag(response, case.version)
    return PlanOut(goals=body.goals, updated_at=plan.updated_at)


@router.post("/cases/{case_id}/interventions", response_model=InterventionOut, status_code=201)
async def add_intervention(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: InterventionCreate,
    access: _can("manage_plan"),
    version: OptionalVersion,
) -> InterventionOut:
    case = await _case(session, access, case_id, request)
    intervention = await service.add_intervention(session, case, body, version)
    _audit(session, request, "add_intervention", [case.id, intervention.id], body.model_fields_set)
    set_etag(response, case.version)
    return views.intervention_out(keys.ring, intervention)


@router.patch(
    "/cases/{case_id}/interventions/{intervention_id}",
    response_model=InterventionOut,
    summary="Update an intervention (If-Match: the intervention's version)",
)
async def update_intervention(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    intervention_id: uuid.UUID,
    body: InterventionUpdate,
    access: _can("update_intervention"),
) -> InterventionOut:
    case = await _case(session, access, case_id, request)
    intervention, changed = await service.update_intervention(
        session, keys, access, case, intervention_id, body, expected_version(request)
    )
    _audit(session, request, "update_intervention", [case.id, intervention.id], changed)
    set_etag(response, intervention.version)
    return views.intervention_out(keys.ring, intervention)


# --- reviews and the work list --------------------------------------------------------------


@router.post("/cases/{case_id}/reviews", response_model=ReviewOut, status_code=201)
async def add_review(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: ReviewCreate,
    access: _can("review"),
    version: OptionalVersion,
) -> ReviewOut:
    case = await _case(session, access, case_id, request)
    review = await service.add_review(session, case, body.due_on, version)
    _audit(session, request, "schedule_review", [case.id, review.id], ["due_on"])
    set_etag(response, case.version)
    return views.review_out(keys.ring, review)


@router.patch(
    "/cases/{case_id}/reviews/{review_id}",
    response_model=ReviewOut,
    summary="Record a review (If-Match: the review's version)",
)
async def record_review(
    request: Request,
    response: Response,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    review_id: uuid.UUID,
    body: ReviewRecord,
    access: _can("review"),
) -> ReviewOut:
    case = await _case(session, access, case_id, request)
    review = await service.record_review(
        session, keys, access, case, review_id, body, expected_version(request)
    )
    _audit(session, request, "record_review", [case.id, review.id], body.model_fields_set)
    set_etag(response, review.version)
    return views.review_out(keys.ring, review)


@router.get(
    "/worklist",
    response_model=list[WorklistItem],
    summary="Reviews due (within `days`) and overdue, in your scope",
)
async def worklist(
    request: Request,
    session: SessionDep,
    access: _can("worklist"),
    days: Annotated[int, Query(ge=0, le=731)] = 14,
) -> list[WorklistItem]:
    today = date.today()
    rows = (
        await session.exec(
            select(CaseReview, CaseFile.id)
            .join(CaseFile, CaseFile.id == CaseReview.case_id)
            .where(
                access.filter(),
                col(CaseReview.done_on).is_(None),
                CaseReview.due_on <= today + timedelta(days=days),
            )
            .order_by(CaseReview.due_on, CaseReview.id)
            .limit(500)
        )
    ).all()
    _audit(session, request, "worklist", sorted({str(case_id) for _, case_id in rows}))
    return [
        WorklistItem(
            review_id=r.id,
            case_id=case_id,
            reference=reference_of(case_id),
            kind=r.kind,
            due_on=r.due_on,
            overdue=r.due_on < today,
        )
        for r, case_id in rows
    ]


@router.post(
    "/cases/{case_id}/break-glass",
    response_model=BreakGlassOut,
    status_code=201,
    summary="Emergency read access to a case outside your scope (audited, reviewed)",
)
async def break_glass(
    request: Request,
    session: SessionDep,
    keys: KeysDep,
    case_id: uuid.UUID,
    body: BreakGlassCreate,
    access: _can("break_glass"),
) -> BreakGlassOut:
    grant = await request_break_glass(session, keys, access, case_id, body.reason)
    audit.record(
        session,
        request,
        action="case.break_glass",
        resource_type="case",
        resource_ids=[case_id, grant.id],
        purpose="break_glass",
        fields=["reason"],
    )
    return BreakGlassOut(grant_id=grant.id, case_id=case_id, expires_at=grant.expires_at)
