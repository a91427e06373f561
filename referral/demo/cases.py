"""Synthetic demo cases: a few hundred, spread over every state, with the records each state
implies, so a newcomer sees a living system. Names are obviously invented ("Demo-017")."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta

from referral.cases.schemas import age_band
from referral.cases.service import CaseKeys, add_months
from referral.crypto import blind_index, seal_field
from referral.models import (
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    Intervention,
    PanelDecision,
    PanelMeeting,
    SupportPlan,
    User,
)
from referral.models.enums import Agency, Concern, Gender, InterventionType, Urgency

PATH = (
    "submitted",
    "screening",
    "assessment",
    "panel",
    "consent_pending",
    "support",
    "monitoring",
    "closed",
)
WEIGHTS = {
    "submitted": 8,
    "screening": 10,
    "assessment": 10,
    "panel": 8,
    "consent_pending": 6,
    "support": 14,
    "monitoring": 10,
    "closed": 34,
}
EARLY_CLOSURES = {
    "submitted": ["withdrawn"],
    "screening": ["no_further_action", "signposted", "referred_to_police"],
    "assessment": ["no_further_action", "signposted"],
    "panel": ["not_adopted", "signposted"],
    "consent_pending": ["consent_declined"],
    "monitoring": ["support_completed"],
}


VOCABULARY = (
    "demo",
    "synthetic",
    "observation",
    "school",
    "family",
    "online",
    "peer",
    "concern",
    "support",
    "meeting",
    "mentor",
    "attendance",
    "change",
    "withdrawn",
    "interest",
)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)).capitalize() + "."


async def seed_demo_cases(
    session,
    keys: CaseKeys,
    municipality_id,
    referrers: list[User],
    coordinator: User,
    count: int,
    rng: random.Random,
) -> int:
    now = datetime.now(UTC)
    meeting = PanelMeeting(
        municipality_id=municipality_id,
        meeting_date=now.date(),
        attendance=[a.value for a in Agency],
        chair_user_id=coordinator.id,
    )
    session.add(meeting)
    await session.flush()
    for n in range(count):
        referrer = rng.choice(referrers)
        target = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        closed_from = None
        if target == "closed":
            closed_from = rng.choice(list(EARLY_CLOSURES))
        last = closed_from or target
        steps = PATH[: PATH.index(last) + 1]
        submitted = now - timedelta(days=rng.randint(20, 700), minutes=rng.randint(0, 1440))
        stamps, moment = {}, submitted
        for state in steps:
            stamps[f"{state}_at"] = moment
            moment = min(now, moment + timedelta(days=rng.randint(2, 30)))
        if closed_from:
            stamps["closed_at"] = moment
        born = date(rng.randint(1985, 2013), rng.randint(1, 12), rng.randint(1, 28))
        given, family = f"Demo-{n:03d}", "Sintetike"
        case = CaseFile(
            municipality_id=municipality_id,
            referrer_user_id=referrer.id,
            referrer_organisation_id=referrer.organisation_id,
            referrer_sector=rng.choice(list(Agency)).value,
            primary_concern=rng.choice(list(Concern)).value,
            urgency=rng.choice(list(Urgency)).value,
            state="closed" if closed_from else target,
            closure_outcome=rng.choice(EARLY_CLOSURES[closed_from]) if closed_from else None,
            exit_reason="risk_reduced" if "monitoring_at" in stamps else None,
            subject_gender=rng.choice(list(Gender)).value,
            subject_age_band=age_band(born, submitted.date()).value,
            blind_index=blind_index(
                keys.blind_key, given_name=given, family_name=family, date_of_birth=born
            ),
            given_name_enc="",
            family_name_enc="",
            date_of_birth_enc="",
            description_enc="",
            indicators_enc="",
            created_at=submitted,
            updated_at=moment,
            **stamps,
        )
        seal_field(keys.ring, case, "given_name", given)
        seal_field(keys.ring, case, "family_name", family)
        seal_field(keys.ring, case, "date_of_birth", born.isoformat())
        seal_field(keys.ring, case, "description", f"[DEMO] {_text(rng, 12)}")
        seal_field(keys.ring, case, "indicators", json.dumps(["sudden_behaviour_change"]))
        seal_field(keys.ring, case, "languages", json.dumps(["sq"]))
        if born > submitted.date().replace(year=submitted.year - 18):
            seal_field(
                keys.ring,
                case,
                "guardian",
                json.dumps({"name": f"Demo guardian {n:03d}", "relationship": "parent"}),
            )
        session.add(case)
        await session.flush()  # no ORM relationships: the case row must exist before its parts
        _add_records(session, keys, case, coordinator, meeting, steps, rng)
    await session.flush()
    return count


def _add_records(session, keys, case, coordinator, meeting, steps, rng) -> None:
    ring = keys.ring
    if "assessment" in steps:
        screening = CaseScreening(case_id=case.id, summary_enc="", recorded_by=coordinator.id)
        seal_field(ring, screening, "summary", f"[DEMO] {_text(rng, 8)}")
        session.add(screening)
        note = CaseNote(
            case_id=case.id,
            section="police",
            kind="deconfliction",
            author_user_id=coordinator.id,
            author_agency="municipality",
            body_enc="",
        )
        seal_field(ring, note, "body", "[DEMO] No conflicting police interest.")
        session.add(note)
    if "panel" in steps:
        assessment = CaseAssessment(
            case_id=case.id,
            section="general",
            author_user_id=coordinator.id,
            author_agency="municipality",
            factors_enc="",
        )
        seal_field(
            ring,
            assessment,
            "factors",
            json.dumps(
                [
                    {"dimension": d, "factor": "demo_factor", "score": rng.randint(0, 3)}
                    for d in ("engagement", "intent", "capability")
                ]
            ),
        )
        session.add(assessment)
    if "consent_pending" in steps or case.closure_outcome in ("not_adopted", "signposted"):
        decision = (
            case.closure_outcome
            if case.closure_outcome in ("not_adopted", "signposted")
            and "consent_pending" not in steps
            else "adopt"
        )
        record = PanelDecision(
            meeting_id=meeting.id,
            case_id=case.id,
            decision=decision,
            rationale_enc="",
            recorded_by=coordinator.id,
        )
        seal_field(ring, record, "rationale", f"[DEMO] {_text(rng, 10)}")
        session.add(record)
    if "support" in steps:
        consent = CaseConsent(
            case_id=case.id,
            given_by="guardian" if case.guardian_enc else "subject",
            scope=["mentoring"],
            given_on=case.consent_pending_at.date(),
            recorded_by=coordinator.id,
        )
        seal_field(ring, consent, "guardian_name", "Demo guardian" if case.guardian_enc else None)
        plan = SupportPlan(case_id=case.id, goals_enc="", created_by=coordinator.id)
        seal_field(ring, plan, "goals", f"[DEMO] {_text(rng, 10)}")
        intervention = Intervention(
            case_id=case.id,
            type=rng.choice(list(InterventionType)).value,
            agency=rng.choice([a.value for a in Agency if a is not Agency.municipality]),
            status="completed" if "monitoring" in steps else "active",
            start_date=case.support_at.date(),
        )
        session.add_all([consent, plan, intervention])
        session.add(
            CaseReview(
                case_id=case.id, kind="plan", due_on=case.support_at.date() + timedelta(days=60)
            )
        )
    if "monitoring" in steps:
        done = case.state == "closed"
        for months in (6, 12):
            session.add(
                CaseReview(
                    case_id=case.id,
                    kind="post_exit",
                    months_after_exit=months,
                    due_on=add_months(case.monitoring_at.date(), months),
                    done_on=case.monitoring_at.date() if done else None,
                    outcome="no_concern" if done else None,
                )
            )
