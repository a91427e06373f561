"""policies/workflow.yaml as frozen, validated models."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from referral.models.enums import Role
from referral.policy_files import load_policy

GUARDS = frozenset(
    {
        "screening_recorded",
        "assessment_recorded",
        "panel_adopted",
        "panel_decision_matches_outcome",
        "consent_valid",
        "plan_has_intervention",
        "exit_reason_given",
        "post_exit_reviews_recorded",
        "immediate_risk_declared",
    }
)
EFFECTS = frozenset({"schedule_post_exit_reviews"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TransitionSpec(_Frozen):
    from_states: tuple[str, ...] = Field(alias="from")
    to: str
    outcomes: tuple[str, ...] = ()
    roles: tuple[Role, ...]
    requires: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()


class Workflow(_Frozen):
    version: int
    states: tuple[str, ...]
    initial: str
    terminal: str
    closure_outcomes: dict[str, str]
    exit_reasons: tuple[str, ...]
    post_exit_review_months: tuple[int, ...]
    referrer_stages: dict[str, str]
    transitions: tuple[TransitionSpec, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Workflow:
        states = set(self.states)
        if self.initial not in states or self.terminal not in states:
            raise ValueError("initial and terminal must be states")
        if set(self.referrer_stages) != states:
            raise ValueError("referrer_stages must name every state")
        for i, t in enumerate(self.transitions):
            where = f"transitions[{i}]"
            unknown = (set(t.from_states) | {t.to}) - states
            if unknown:
                raise ValueError(f"{where}: unknown states {sorted(unknown)}")
            if self.terminal in t.from_states:
                raise ValueError(f"{where}: nothing leaves {self.terminal}")
            if (t.to == self.terminal) != bool(t.outcomes):
                raise ValueError(f"{where}: outcomes are given exactly for closing transitions")
            bad_outcomes = set(t.outcomes) - set(self.closure_outcomes)
            if bad_outcomes:
                raise ValueError(f"{where}: unknown outcomes {sorted(bad_outcomes)}")
            if set(t.requires) - GUARDS:
                raise ValueError(f"{where}: unknown guards {sorted(set(t.requires) - GUARDS)}")
            if set(t.effects) - EFFECTS:
                raise ValueError(f"{where}: unknown effects {sorted(set(t.effects) - EFFECTS)}")
        return self

    @property
    def active_states(self) -> tuple[str, ...]:
        return tuple(s for s in self.states if s != self.terminal)


def load_workflow(path: Path) -> Workflow:
    return load_policy(path, Workflow)
