"""policies/access.yaml as frozen, validated models."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from referral.authz.resources import RESOURCES
from referral.models.enums import Role


class PolicyError(RuntimeError):
    """A policy file is missing or invalid; the app must not start."""


class Scope(StrEnum):
    all = "all"
    municipality = "municipality"
    own = "own"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Grant(_Frozen):
    actions: frozenset[str]
    scope: Scope


def _check_grants(grants: dict[str, Grant], where: str) -> None:
    for resource, grant in grants.items():
        spec = RESOURCES.get(resource)
        if spec is None:
            raise ValueError(f"{where}: unknown resource type {resource!r}")
        unknown = grant.actions - spec.actions
        if unknown:
            raise ValueError(f"{where}.{resource}: unknown actions {sorted(unknown)}")
        if grant.scope is Scope.own and spec.owner_attr is None:
            raise ValueError(f"{where}.{resource}: scope 'own' is not defined for it")


class RolePolicy(_Frozen):
    national: bool
    grants: dict[str, Grant]


class AccessPolicy(_Frozen):
    version: int
    common: dict[str, Grant]
    roles: dict[Role, RolePolicy]

    @model_validator(mode="after")
    def _complete_and_known(self) -> AccessPolicy:
        missing = set(Role) - set(self.roles)
        if missing:
            raise ValueError(f"roles missing from the policy: {sorted(missing)}")
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


def load_access_policy(path: Path) -> AccessPolicy:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot be read: {exc}") from exc
    try:
        return AccessPolicy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{path}: invalid: {exc}") from exc
