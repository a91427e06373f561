"""policies/access.yaml as frozen, validated models."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from referral.authz.resources import RESOURCES
from referral.models.enums import Agency, Role, Section
from referral.policy_files import PolicyError, load_policy

__all__ = ["AccessPolicy", "Grant", "PolicyError", "Scope", "load_access_policy"]

STAGE_STATES = frozenset(
    {"submitted", "screening", "assessment", "panel", "consent_pending", "support", "monitoring"}
)


class Scope(StrEnum):
    all = "all"
    municipality = "municipality"
    own = "own"


class SectionAccess(StrEnum):
    all = "all"
    by_agency = "by_agency"
    none = "none"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Grant(_Frozen):
    actions: frozenset[str]
    scope: Scope
    reached: dict[str, str] | None = None
    view: str | None = None
    sections: SectionAccess | None = None
    agency_bound: frozenset[str] = frozenset()

    def reached_state(self, agency: str) -> str | None:
        if self.reached is None:
            return None
        return self.reached.get(agency, self.reached.get("default"))


def _check_grants(grants: dict[str, Grant], where: str) -> None:
    for resource, grant in grants.items():
        spec = RESOURCES.get(resource)
        here = f"{where}.{resource}"
        if spec is None:
            raise ValueError(f"{where}: unknown resource type {resource!r}")
        unknown = (grant.actions | grant.agency_bound) - spec.actions
        if unknown:
            raise ValueError(f"{here}: unknown actions {sorted(unknown)}")
        if grant.scope is Scope.own and spec.owner_attr is None:
            raise ValueError(f"{here}: scope 'own' is not defined for it")
        if grant.reached is not None:
            if not spec.has_stage_timestamps:
                raise ValueError(f"{here}: 'reached' is not defined for it")
            if "default" not in grant.reached:
                raise ValueError(f"{here}: 'reached' needs a default")
            bad = {k for k in grant.reached if k != "default"} - set(Agency)
            bad |= set(grant.reached.values()) - STAGE_STATES
            if bad:
                raise ValueError(f"{here}: 'reached' names unknown agencies or states {bad}")
        if spec.views and (grant.view not in spec.views or grant.sections is None):
            raise ValueError(f"{here}: needs a view of {sorted(spec.views)} and sections")
        if not spec.views and (grant.view is not None or grant.sections is not None):
            raise ValueError(f"{here}: views and sections are only for cases")


class BreakGlassPolicy(_Frozen):
    minutes: int = Field(ge=1, le=24 * 60)
    min_reason_length: int = Field(ge=1)
    opens: frozenset[str]

    @model_validator(mode="after")
    def _opens_reads(self) -> BreakGlassPolicy:
        reads = {"read", "read_notes", "read_assessments"}
        if not self.opens <= reads:
            raise ValueError(f"break_glass.opens may only name read actions {sorted(reads)}")
        return self


class SecondFactorPolicy(_Frozen):
    required_for: frozenset[Role]
    issuer: str


class RolePolicy(_Frozen):
    national: bool
    grants: dict[str, Grant]


class SectionRule(_Frozen):
    readers: Literal["all"] | frozenset[Agency]


class AccessPolicy(_Frozen):
    version: int
    common: dict[str, Grant]
    second_factor: SecondFactorPolicy
    break_glass: BreakGlassPolicy
    sections: dict[Section, SectionRule]
    agency_sections: dict[Agency, Section]
    roles: dict[Role, RolePolicy]
    # Statements prepared from this policy's scope conditions (Access.prepared): they live
    # and die with the policy they were built from.
    _prepared: dict[Hashable, Any] = PrivateAttr(default_factory=dict)

    def prepared(self, key: Hashable, build: Callable[[], Any]) -> Any:
        statement = self._prepared.get(key)
        if statement is None:
            statement = self._prepared[key] = build()
        return statement

    @model_validator(mode="after")
    def _complete_and_known(self) -> AccessPolicy:
        missing = set(Role) - set(self.roles)
        if missing:
            raise ValueError(f"roles missing from the policy: {sorted(missing)}")
        if set(self.sections) != set(Section):
            raise ValueError(f"sections must name each of {sorted(Section)}")
        if set(self.agency_sections) != set(Agency):
            raise ValueError(f"agency_sections must name each of {sorted(Agency)}")
        _check_grants(self.common, "common")
        for role, role_policy in self.roles.items():
            _check_grants(role_policy.grants, f"roles.{role}")
            overlap = set(role_policy.grants) & set(self.common)
            if overlap:
                raise ValueError(f"roles.{role}: {sorted(overlap)} also granted in common")
            if role_policy.national and any(
                g.scope is Scope.municipality for g in role_policy.grants.values()
            ):
                raise ValueError(f"roles.{role}: a national role has no municipality scope")
        return self

    def grant(self, role: str, resource: str) -> Grant | None:
        return self.common.get(resource) or self.roles[Role(role)].grants.get(resource)

    def is_national(self, role: str) -> bool:
        return self.roles[Role(role)].national

    def readable_sections(self, grant: Grant, agency: str) -> frozenset[str]:
        if grant.sections is SectionAccess.all:
            return frozenset(Section)
        if grant.sections is SectionAccess.by_agency:
            return frozenset(
                section
                for section, rule in self.sections.items()
                if rule.readers == "all" or agency in rule.readers
            )
        return frozenset()

    def writable_sections(self, grant: Grant, agency: str) -> frozenset[str]:
        if grant.sections is SectionAccess.all:
            return frozenset(Section)
        if grant.sections is SectionAccess.by_agency:
            return frozenset({self.agency_sections[Agency(agency)]})
        return frozenset()


def load_access_policy(path: Path) -> AccessPolicy:
    return load_policy(path, AccessPolicy)
