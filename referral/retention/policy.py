"""policies/retention.yaml as a frozen, validated model."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from referral.policy_files import load_policy


class Closable(Protocol):
    """What the rule reads of a case: a CaseFile, or a row of just these columns."""

    @property
    def closed_at(self) -> datetime | None: ...

    @property
    def assessment_at(self) -> datetime | None: ...


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClosedCases(_Frozen):
    never_assessed_days: int = Field(ge=1)
    default_days: int = Field(ge=1)


class RetentionPolicy(_Frozen):
    version: int
    closed_cases: ClosedCases

    def purge_due(self, case: Closable) -> datetime | None:
        """When the case's identity and text are due for purging (None while it is open)."""
        if case.closed_at is None:
            return None
        rule = self.closed_cases
        days = rule.never_assessed_days if case.assessment_at is None else rule.default_days
        return case.closed_at + timedelta(days=days)


def load_retention_policy(path: Path) -> RetentionPolicy:
    return load_policy(path, RetentionPolicy)
