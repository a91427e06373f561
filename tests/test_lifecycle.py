"""Unit tests of the state machine, generated from policies/workflow.yaml where possible."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from referral.authz.policy import PolicyError
from referral.cases.lifecycle import CaseFacts, TransitionRequest, evaluate
from referral.cases.workflow import load_workflow

POLICY = Path(__file__).resolve().parent.parent / "policies" / "workflow.yaml"
WORKFLOW = load_workflow(POLICY)
ALL_FACTS = CaseFacts(
    screening_recorded=True,
    assessment_recorded=True,
    panel_decision="adopt",
    consent_valid=True,
    plan_has_intervention=True,
    post_exit_reviews_recorded=True,
)


def _edges() -> set[tuple[str, str, str | None]]:
    return {
        (src, spec.to, outcome)
        for spec in WORKFLOW.transitions
        for src in spec.from_states
        for outcome in (spec.outcomes or (None,))
    }


def test_the_design_lifecycle_is_what_the_policy_says():
    happy = [
        "submitted",
        "screening",
        "assessment",
        "panel",
        "consent_pending",
        "support",
        "monitoring",
        "closed",
    ]
    edges = {(a, b) for a, b, _ in _edges()}
    for a, b in itertools.pairwise(happy):
        assert (a, b) in edges
    assert ("submitted", "closed", "withdrawn") in _edges()
    assert ("monitoring", "assessment", None) in _edges()
    for state in WORKFLOW.active_states:
        assert (state, "closed", "referred_to_police") in _edges()


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(WORKFLOW.states, repeat=2)))
def test_every_pair_not_in_the_policy_is_refused(src, dst):
    legal = {(a, b) for a, b, _ in _edges()}
    verdict = evaluate(
        WORKFLOW,
        "coordinator",
        src,
        TransitionRequest(
            to=dst,
            outcome="no_further_action" if dst == "closed" else None,
            exit_reason="risk_reduced",
            immediate_risk=True,
        ),
        ALL_FACTS,
    )
    if (src, dst) not in legal:
        assert not verdict.ok


def test_withdrawal_is_the_referrers_and_only_from_submitted():
    withdraw = TransitionRequest(to="closed", outcome="withdrawn")
    assert evaluate(WORKFLOW, "referrer", "submitted", withdraw, CaseFacts()).ok
    assert not evaluate(WORKFLOW, "referrer", "screening", withdraw, CaseFacts()).ok
    assert not evaluate(WORKFLOW, "coordinator", "submitted", withdraw, CaseFacts()).ok
    assert not evaluate(
        WORKFLOW, "referrer", "submitted", TransitionRequest("screening"), CaseFacts()
    ).ok


@pytest.mark.parametrize(
    ("state", "request_", "facts", "unmet"),
    [
        ("screening", TransitionRequest("assessment"), CaseFacts(), ["screening_recorded"]),
        ("assessment", TransitionRequest("panel"), CaseFacts(), ["assessment_recorded"]),
        (
            "panel",
            TransitionRequest("consent_pending"),
            CaseFacts(panel_decision="not_adopted"),
            ["panel_adopted"],
        ),
        (
            "panel",
            TransitionRequest("closed", "not_adopted"),
            CaseFacts(panel_decision="adopt"),
            ["panel_decision_matches_outcome", "immediate_risk_declared"],
        ),
        (
            "consent_pending",
            TransitionRequest("support"),
            CaseFacts(consent_valid=True),
            ["plan_has_intervention"],
        ),
        (
            "consent_pending",
            TransitionRequest("support"),
            CaseFacts(plan_has_intervention=True),
            ["consent_valid"],
        ),
        ("support", TransitionRequest("monitoring"), ALL_FACTS, ["exit_reason_given"]),
        (
            "monitoring",
            TransitionRequest("closed", "support_completed"),
            CaseFacts(),
            ["post_exit_reviews_recorded"],
        ),
    ],
)
def test_guards(state, request_, facts, unmet):
    verdict = evaluate(WORKFLOW, "coordinator", state, request_, facts)
    assert not verdict.ok
    assert set(verdict.unmet) >= set(unmet[:1])
    assert verdict.allowed


def test_panel_closure_follows_the_decision():
    facts = CaseFacts(panel_decision="signposted")
    assert evaluate(
        WORKFLOW, "coordinator", "panel", TransitionRequest("closed", "signposted"), facts
    ).ok
    assert not evaluate(
        WORKFLOW, "coordinator", "panel", TransitionRequest("closed", "not_adopted"), facts
    ).ok


def test_immediate_risk_closes_any_active_state_to_the_police():
    for state in WORKFLOW.active_states:
        request_ = TransitionRequest("closed", "referred_to_police", immediate_risk=True)
        assert evaluate(WORKFLOW, "coordinator", state, request_, CaseFacts()).ok, state


def test_monitoring_to_closed_needs_both_reviews_and_schedules_nothing_more():
    request_ = TransitionRequest("closed", "support_completed")
    assert evaluate(WORKFLOW, "coordinator", "monitoring", request_, ALL_FACTS).ok
    spec = evaluate(
        WORKFLOW,
        "coordinator",
        "support",
        TransitionRequest("monitoring", exit_reason="moved_away"),
        CaseFacts(),
    ).spec
    assert spec is not None
    assert spec.effects == ("schedule_post_exit_reviews",)


def test_allowed_list_names_what_the_role_could_do():
    verdict = evaluate(
        WORKFLOW, "coordinator", "screening", TransitionRequest("support"), CaseFacts()
    )
    assert {m["to"] for m in verdict.allowed} == {"assessment", "closed"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda w: w["transitions"].append(
                {"from": ["closed"], "to": "screening", "roles": ["coordinator"]}
            ),
            "nothing leaves",
        ),
        (
            lambda w: w["transitions"].append(
                {"from": ["limbo"], "to": "screening", "roles": ["coordinator"]}
            ),
            "unknown states",
        ),
        (lambda w: w["transitions"][0].update(requires=["vibes"]), "unknown guards"),
        (lambda w: w["transitions"][0].update(roles=["wizard"]), "wizard"),
        (lambda w: w["transitions"][1].update(outcomes=["vanished"]), "unknown outcomes"),
        (lambda w: w["referrer_stages"].pop("panel"), "referrer_stages"),
    ],
)
def test_an_invalid_workflow_is_refused(tmp_path, change, message):
    raw = yaml.safe_load(POLICY.read_text())
    change(raw)
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PolicyError) as info:
        load_workflow(path)
    assert message in str(info.value)
