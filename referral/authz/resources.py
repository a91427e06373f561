"""The resource types the policy can grant, the actions each has, and how scope maps to SQL.

Both `can()` and the scoped query read a resource's scope through the same spec, so the
"may I see this one" and "which may I list" answers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referral.models import Municipality, Organisation, User


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    actions: frozenset[str]
    model: Any = None
    municipality_attr: str | None = None
    owner_attr: str | None = None


RESOURCES: dict[str, ResourceSpec] = {
    spec.name: spec
    for spec in (
        ResourceSpec(
            "account",
            frozenset({"read", "change_password", "logout"}),
            model=User,
            municipality_attr="municipality_id",
            owner_attr="id",
        ),
        ResourceSpec(
            "municipality",
            frozenset({"list", "read", "create", "update"}),
            model=Municipality,
            municipality_attr="id",
        ),
        ResourceSpec(
            "organisation",
            frozenset({"list", "read", "create", "update"}),
            model=Organisation,
            municipality_attr="municipality_id",
        ),
        ResourceSpec(
            "user",
            frozenset({"list", "read", "create", "update", "reset_password"}),
            model=User,
            municipality_attr="municipality_id",
            owner_attr="id",
        ),
    )
}
