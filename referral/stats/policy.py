"""policies/reporting.yaml as frozen, validated models."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from referral.policy_files import load_policy
from referral.stats.disclosure import TableSpec

MEASURES = ("referrals", "panel_reviews", "cases_adopted", "case_outcomes")
COUNTS = ("referred", "reached_panel", "adopted", "closed")
SOURCES = (
    "referrer_sector",
    "primary_concern",
    "subject_age_band",
    "subject_gender",
    "closure_outcome",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Dimension(_Frozen):
    source: Literal[SOURCES]  # type: ignore[valid-type]
    categories: tuple[str, ...]
    recode: dict[str, str] = Field(default_factory=dict)

    def category_of(self, raw: str | None) -> str | None:
        value = self.recode.get(raw, raw) if raw is not None else None
        return value if value in self.categories else None


class Measure(_Frozen):
    counts: Literal[COUNTS]  # type: ignore[valid-type]
    dimensions: tuple[str, ...]


class FamilyEntry(_Frozen):
    geography: Literal["municipality", "region", "national"]
    period: Literal["month", "quarter", "year"]
    breakdowns: tuple[tuple[str, ...], ...]


class ReportingPolicy(_Frozen):
    version: int
    threshold: int = Field(ge=2)
    rounding_base: int = Field(ge=1)
    release_delay_days: int = Field(ge=0)
    first_year: int = Field(ge=2000)
    dimensions: dict[str, Dimension]
    measures: dict[str, Measure]
    family: tuple[FamilyEntry, ...]

    @model_validator(mode="after")
    def _consistent(self) -> ReportingPolicy:
        if set(self.measures) != set(MEASURES):
            raise ValueError(f"measures must be exactly {list(MEASURES)}")
        for name, measure in self.measures.items():
            unknown = set(measure.dimensions) - set(self.dimensions)
            if unknown:
                raise ValueError(f"measures.{name}: unknown dimensions {sorted(unknown)}")
        for entry in self.family:
            for breakdown in entry.breakdowns:
                if len(breakdown) > 2 or set(breakdown) - set(self.dimensions):
                    raise ValueError(f"family: {list(breakdown)} is not 0-2 known dimensions")
        return self

    def tables(self, measure: str) -> list[TableSpec]:
        dims = set(self.measures[measure].dimensions)
        return [
            TableSpec(entry.geography, entry.period, tuple(breakdown))
            for entry in self.family
            for breakdown in entry.breakdowns
            if set(breakdown) <= dims
        ]

    def released(self, as_of: date) -> dict[str, list[str]]:
        """Periods whose end lies at least release_delay_days before `as_of`."""
        periods: dict[str, list[str]] = {"month": [], "quarter": [], "year": []}
        delay = timedelta(days=self.release_delay_days)
        for year in range(self.first_year, as_of.year + 1):
            if date(year, 12, 31) + delay < as_of:
                periods["year"].append(str(year))
            for quarter in range(1, 5):
                end = _month_end(year, quarter * 3)
                if end + delay < as_of:
                    periods["quarter"].append(f"{year}-Q{quarter}")
            for month in range(1, 13):
                if _month_end(year, month) + delay < as_of:
                    periods["month"].append(f"{year}-{month:02d}")
        return periods


def _month_end(year: int, month: int) -> date:
    first_next = date(year + month // 12, month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def load_reporting_policy(path: Path) -> ReportingPolicy:
    return load_policy(path, ReportingPolicy)
