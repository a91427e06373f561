"""policies/retention.yaml as a frozen, validated model."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from referral.models import CaseFile
from referral.policy_files import load_policy


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClosedCases(_Frozen):
    never_assessed_days: int = Field(ge=1)
    default_days: int = Field(ge=1)


class RetentionPolicy(_Frozen):
    version: int
    closed_cases: ClosedCases

    def purge_due(self, case: CaseFile) -> datetime | None:
        """When the case's identity and text are due for purging (None while it is open)."""
        if case.closed_at is None:
            return None
        rule = self.closed_cases
        days = rule.never_assessed_days if case.assessment_at is None else rule.default_days
        return case.closed_at + timedelta(days=days)


def load_retention_policy(path: Path) -> RetentionPolicy:
    return load_policy(path, RetentionPolicy)
