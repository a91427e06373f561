"""The state machine as a pure function: which transitions exist, and whether one may happen.

No database and no web imports: the service gathers the facts, this decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from referral.cases.workflow import TransitionSpec, Workflow


@dataclass(frozen=True, slots=True)
class TransitionRequest:
    to: str
    outcome: str | None = None
    exit_reason: str | None = None
    immediate_risk: bool = False


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What the guards look at, gathered by the service from the case's records."""

    screening_recorded: bool = False
    assessment_recorded: bool = False
    panel_decision: str | None = None
    consent_valid: bool = False
    plan_has_intervention: bool = False
    post_exit_reviews_recorded: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    spec: TransitionSpec | None
    allowed: list[dict[str, object]] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.spec is not None


def _guard(name: str, request: TransitionRequest, facts: CaseFacts) -> bool:
    match name:
        case "screening_recorded":
            return facts.screening_recorded
        case "assessment_recorded":
            return facts.assessment_recorded
        case "panel_adopted":
            return facts.panel_decision == "adopt"
        case "panel_decision_matches_outcome":
            return facts.panel_decision is not None and facts.panel_decision == request.outcome
        case "consent_valid":
            return facts.consent_valid
        case "plan_has_intervention":
            return facts.plan_has_intervention
        case "exit_reason_given":
            return request.exit_reason is not None
        case "post_exit_reviews_recorded":
            return facts.post_exit_reviews_recorded
        case "immediate_risk_declared":
            return request.immediate_risk
    raise ValueError(f"unknown guard {name}")


def allowed_transitions(workflow: Workflow, state: str, role: str) -> list[dict[str, object]]:
    """The moves this role could make from this state (guards aside), for a 409 body."""
    moves: dict[str, set[str]] = {}
    for spec in workflow.transitions:
        if state in spec.from_states and role in spec.roles:
            moves.setdefault(spec.to, set()).update(spec.outcomes)
    return [{"to": to, "outcomes": sorted(outcomes)} for to, outcomes in sorted(moves.items())]


def evaluate(
    workflow: Workflow, role: str, state: str, request: TransitionRequest, facts: CaseFacts
) -> Verdict:
    candidates = [
        spec
        for spec in workflow.transitions
        if state in spec.from_states
        and spec.to == request.to
        and role in spec.roles
        and (request.outcome in spec.outcomes if spec.outcomes else request.outcome is None)
    ]
    allowed = allowed_transitions(workflow, state, role)
    if not candidates:
        return Verdict(None, allowed=allowed)
    unmet: list[str] = []
    for spec in candidates:
        missing = [g for g in spec.requires if not _guard(g, request, facts)]
        if not missing:
            return Verdict(spec, allowed=allowed)
        unmet.extend(g for g in missing if g not in unmet)
    return Verdict(None, allowed=allowed, unmet=unmet)
