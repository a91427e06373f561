"""Turning stored rows into the response each role may see, decrypting only what it shows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import orjson
from fastapi import Response
from pydantic import BaseModel

from referral.cases.repository import LISTED_NAMES, CaseParts
from referral.cases.schemas import (
    AssessmentOut,
    CoordinatorCaseView,
    Factor,
    InterventionOut,
    NoteOut,
    PanelCaseView,
    ReferrerCaseView,
    ReviewOut,
    reference_of,
)
from referral.cases.workflow import Workflow
from referral.concurrency import etag
from referral.crypto import KeyRing, open_field
from referral.models import CaseAssessment, CaseFile, CaseNote
from referral.pagination import Page


def referrer_view(workflow: Workflow, case: CaseFile) -> ReferrerCaseView:
    coarse = workflow.closure_outcomes.get(case.closure_outcome) if case.closure_outcome else None
    return ReferrerCaseView(
        id=case.id,
        reference=reference_of(case.id),
        stage=workflow.referrer_stages[case.state],
        outcome=coarse,
        submitted_at=case.submitted_at,
        closed_at=case.closed_at,
    )


def _dump(document: Any) -> bytes:
    """A list page or a detail view as JSON: the bytes pydantic writes for its model (ADR
    0034), times in UTC with "Z", the driver's UUIDs as text."""
    return orjson.dumps(document, default=_json_default, option=orjson.OPT_UTC_Z)


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):  # the driver's own UUID type, which orjson does not write
        return str(value)
    raise TypeError(f"{type(value).__name__} is not part of a case view")


# Where each value of a listed row is (`repository.LISTED_NAMES`): a page reads 50 rows.
_AT = {name: position for position, name in enumerate(LISTED_NAMES)}


def _listed_name(ring: KeyRing, row: Sequence[Any], row_id: str) -> str:
    """The subject's name on a listed row ("[purged]" once erased)."""
    if row[_AT["purged_at"]] is not None:
        return "[purged]"
    given, family = row[_AT["given_name_enc"]], row[_AT["family_name_enc"]]
    if given:
        given = ring.decrypt(given, table="case_file", column="given_name", row_id=row_id)
    if family:
        family = ring.decrypt(family, table="case_file", column="family_name", row_id=row_id)
    return f"{given} {family}"


def list_item(ring: KeyRing, row: Sequence[Any]) -> dict[str, Any]:
    """A row of `repository.listed_page` as a `CaseListItem`, in the values its JSON holds."""
    if len(row) != len(LISTED_NAMES):
        raise ValueError("not a listed row")
    if row[_AT["submitted_at"]] is None:  # the schema's datetime: never sent as null
        raise ValueError("a listed case has no submitted_at")
    row_id = str(row[_AT["id"]])  # written out once, for the item, its reference and both names
    return {
        "id": row_id,
        "reference": reference_of(row[_AT["id"]]),
        "state": row[_AT["state"]],
        "urgency": row[_AT["urgency"]],
        "primary_concern": row[_AT["primary_concern"]],
        "subject_name": _listed_name(ring, row, row_id),
        "subject_age_band": row[_AT["subject_age_band"]],
        "submitted_at": row[_AT["submitted_at"]],
        "overdue_reviews": row[_AT["overdue"]],
        "version": row[_AT["version"]],
    }


def list_page_response(ring: KeyRing, rows: list[Any], cursor: uuid.UUID | None) -> Response:
    """A page of the list as everyone but a referrer sees it (`Page[CaseListItem]`), written
    by orjson: the same bytes as pydantic's JSON of the page (tests/test_list_page_json.py
    holds them equal, ADR 0034), from values the database has typed already. Validating and dumping
    the page through pydantic was a seventh of a list's CPU."""
    page = {
        "items": [list_item(ring, row) for row in rows],
        "next_cursor": None if cursor is None else str(cursor),
    }
    return Response(_dump(page), media_type="application/json")


def page_response(page: Page[Any]) -> Response:
    """The page sent as it is. It is built as the one type it must be, so FastAPI's check
    would try every item against each page type of the route's union, from attributes:
    0.4 ms a page, about a tenth of a list's CPU."""
    return Response(page.model_dump_json(), media_type="application/json")


def _json(ring: KeyRing, obj: object, field: str):
    raw = open_field(ring, obj, field)
    return None if raw is None else json.loads(raw)


# --- the detail view, as its JSON holds it ---------------------------------------------------
# A detail view is built as a dict of JSON-ready values, in the field order of the model the
# route declares (`PanelCaseView`, or `CoordinatorCaseView` with the possible re-referrals),
# and written by orjson: the same bytes as pydantic's JSON of that model, which
# tests/test_case_views_json.py holds, on every kind of record. Building the models and
# dumping them was a seventh of an audited read's CPU; the records are built and typed by
# our own code and the database, and the model's validation of them found nothing (ADR 0034).

CaseDocument = dict[str, Any]


def as_json(view: CaseDocument) -> dict[str, Any]:
    """A detail view as its JSON reads back: ids and times as text."""
    return orjson.loads(_dump(view))


def fields_of(view: BaseModel | CaseDocument) -> frozenset[str]:
    """The fields a view shows, as its read's audit event names them."""
    return frozenset(view) if isinstance(view, dict) else frozenset(view.model_fields_set)


def note_values(ring: KeyRing, note: CaseNote) -> dict[str, Any]:
    return {
        "id": note.id,
        "section": note.section,
        "kind": note.kind,
        "author_user_id": note.author_user_id,
        "author_agency": note.author_agency,
        "body": open_field(ring, note, "body") or "",
        "created_at": note.created_at,
    }


def note_out(ring: KeyRing, note: CaseNote) -> NoteOut:
    return NoteOut(**note_values(ring, note))


def assessment_values(ring: KeyRing, assessment: CaseAssessment) -> dict[str, Any]:
    # what was stored is checked as it was taken in: a factor the request would refuse fails
    factors = [Factor.model_validate(f) for f in _json(ring, assessment, "factors") or []]
    totals = {d: 0 for d in ("engagement", "intent", "capability")}
    for factor in factors:
        totals[factor.dimension] += factor.score
    return {
        "id": assessment.id,
        "section": assessment.section,
        "author_agency": assessment.author_agency,
        "factors": [factor.model_dump() for factor in factors],
        "totals": totals,
        "summary": open_field(ring, assessment, "summary"),
        "assessed_at": assessment.assessed_at,
    }


def assessment_out(ring: KeyRing, assessment: CaseAssessment) -> AssessmentOut:
    return AssessmentOut(**assessment_values(ring, assessment))


def _entered(case: CaseFile, workflow: Workflow) -> dict:
    return {
        state: getattr(case, f"{state}_at")
        for state in workflow.states
        if getattr(case, f"{state}_at") is not None
    }


def detail_fields(rereferrals: bool) -> frozenset[str]:
    """The fields of a detail view, as its read's audit event names them: `detail_view` sets
    every field of the view it builds (with `rereferrals`, the coordinator's)."""
    return frozenset((CoordinatorCaseView if rereferrals else PanelCaseView).model_fields)


def case_response(view: BaseModel | CaseDocument, version: int) -> Response:
    """The view sent as it is, with its ETag: a detail view written by orjson (above), a
    referrer's by its model. Either is built as the one type it must be, so FastAPI's check
    against the union of case views would only validate it again."""
    headers = {"ETag": etag(version)}
    body = _dump(view) if isinstance(view, dict) else view.model_dump_json()
    return Response(body, media_type="application/json", headers=headers)


def _date(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def detail_view(
    ring: KeyRing,
    workflow: Workflow,
    case: CaseFile,
    parts: CaseParts,
    readable_sections: frozenset[str],
) -> CaseDocument:
    """The case as a panel member sees it (`PanelCaseView`), or, with the records' possible
    re-referrals, as a coordinator does (`CoordinatorCaseView`)."""
    sections = {
        str(section): {  # a section may come as its enum: its text is the key
            "notes": [note_values(ring, n) for n in parts.notes if n.section == section],
            "assessments": [
                assessment_values(ring, a) for a in parts.assessments if a.section == section
            ],
        }
        for section in sorted(readable_sections)
    }
    screening, plan = parts.screening, parts.plan
    view: CaseDocument = {
        "id": case.id,
        "reference": reference_of(case.id),
        "municipality_id": case.municipality_id,
        "state": case.state,
        "closure_outcome": case.closure_outcome,
        "exit_reason": case.exit_reason,
        "urgency": case.urgency,
        "referrer_sector": case.referrer_sector,
        "primary_concern": case.primary_concern,
        "subject": {
            "given_name": open_field(ring, case, "given_name"),
            "family_name": open_field(ring, case, "family_name"),
            "date_of_birth": _date(open_field(ring, case, "date_of_birth")),
            "gender": case.subject_gender,
            "age_band": case.subject_age_band,
            "address": open_field(ring, case, "address"),
            "contacts": open_field(ring, case, "contacts"),
            "guardian": _json(ring, case, "guardian"),
            "languages": _json(ring, case, "languages") or [],
        },
        "description": open_field(ring, case, "description"),
        "indicators": _json(ring, case, "indicators") or [],
        "purged_at": case.purged_at,
        "legal_hold": case.legal_hold_at is not None,
        "entered": _entered(case, workflow),
        "screening": None
        if screening is None
        else {
            "summary": open_field(ring, screening, "summary") or "",
            "rereferrals_reviewed": screening.rereferrals_reviewed,
            "recorded_by": screening.recorded_by,
            "recorded_at": screening.recorded_at,
        },
        "panel_decisions": [
            {
                "id": d.id,
                "meeting_id": d.meeting_id,
                "decision": d.decision,
                "rationale": open_field(ring, d, "rationale") or "",
                "dissenting_agencies": d.dissenting_agencies,
                "dissent": open_field(ring, d, "dissent"),
                "recorded_at": d.recorded_at,
            }
            for d in parts.decisions
        ],
        "consents": [
            {
                "id": c.id,
                "given_by": c.given_by,
                "guardian_name": open_field(ring, c, "guardian_name"),
                "scope": c.scope,
                "given_on": c.given_on,
                "withdrawn_on": c.withdrawn_on,
                "version": c.version,
            }
            for c in parts.consents
        ],
        "plan": None
        if plan is None
        else {"goals": open_field(ring, plan, "goals") or "", "updated_at": plan.updated_at},
        "interventions": [intervention_values(ring, i) for i in parts.interventions],
        "reviews": [review_values(ring, r) for r in parts.reviews],
        "sections": sections,
        "version": case.version,
    }
    if parts.rereferrals is not None:
        view["possible_rereferrals"] = [
            {
                "case_id": c.id,
                "reference": reference_of(c.id),
                "state": c.state,
                "submitted_at": c.submitted_at,
            }
            for c in parts.rereferrals
        ]
    return view


def intervention_values(ring: KeyRing, i: Any) -> dict[str, Any]:
    return {
        "id": i.id,
        "type": i.type,
        "agency": i.agency,
        "status": i.status,
        "start_date": i.start_date,
        "end_date": i.end_date,
        "outcome": open_field(ring, i, "outcome"),
        "version": i.version,
    }


def intervention_out(ring: KeyRing, i: Any) -> InterventionOut:
    return InterventionOut(**intervention_values(ring, i))


def review_values(ring: KeyRing, r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "months_after_exit": r.months_after_exit,
        "due_on": r.due_on,
        "done_on": r.done_on,
        "outcome": r.outcome,
        "notes": open_field(ring, r, "notes"),
        "version": r.version,
    }


def review_out(ring: KeyRing, r: Any) -> ReviewOut:
    return ReviewOut(**review_values(ring, r))
