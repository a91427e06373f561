"""The resource types the policy can grant, the actions each has, and how scope maps to SQL.

Both `can()` and the scoped query read a resource's scope through the same spec, so the
"may I see this one" and "which may I list" answers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referral.models import CaseFile, Municipality, Organisation, PanelMeeting, User

CASE_VIEWS = frozenset({"referrer", "panel", "coordinator"})


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    actions: frozenset[str]
    model: Any = None
    municipality_attr: str | None = None
    owner_attr: str | None = None
    # `reached: <state>` means the column `<state>_at` is set on the object
    has_stage_timestamps: bool = False
    views: frozenset[str] = frozenset()


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
            frozenset(
                {"list", "read", "create", "update", "reset_password", "reset_second_factor"}
            ),
            model=User,
            municipality_attr="municipality_id",
            owner_attr="id",
        ),
        ResourceSpec(
            "case",
            frozenset(
                {
                    "create",
                    "list",
                    "read",
                    "transition",
                    "add_information",
                    "add_note",
                    "read_notes",
                    "screen",
                    "assess",
                    "read_assessments",
                    "consent",
                    "manage_plan",
                    "update_intervention",
                    "review",
                    "worklist",
                    "break_glass",
                    "legal_hold",
                    "erase",
                    "export",
                }
            ),
            model=CaseFile,
            municipality_attr="municipality_id",
            owner_attr="referrer_user_id",
            has_stage_timestamps=True,
            views=CASE_VIEWS,
        ),
        ResourceSpec("stats", frozenset({"catalogue", "query", "snapshot"})),
        ResourceSpec(
            "audit",
            frozenset({"search", "verify", "read_break_glass", "review_break_glass"}),
        ),
        ResourceSpec(
            "panel_meeting",
            frozenset({"list", "read", "create", "record_decision"}),
            model=PanelMeeting,
            municipality_attr="municipality_id",
        ),
    )
}
