"""What you may do: one decision point for single objects and for lists.

`can()` answers "may this actor do X to this object"; `scope_filter()` answers "which
objects may this actor list" as a SQL condition. Both read the same grant and the same
resource spec. Routes use them through `authorize()` (see dependencies.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, false, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from referral.authz.actor import Actor
from referral.authz.policy import AccessPolicy, Grant, Scope
from referral.authz.resources import RESOURCES, ResourceSpec
from referral.models import BreakGlassGrant, CaseFile
from referral.models.base import utcnow

__all__ = ["RESOURCES", "AccessPolicy", "Actor", "can", "can_type", "scope_filter"]


def can_type(policy: AccessPolicy, actor: Actor, action: str, resource: str) -> Grant | None:
    """The grant that lets the actor do `action` on some objects of this type, or None."""
    grant = policy.grant(actor.role, resource)
    if grant is None or action not in grant.actions:
        return None
    return grant


def _in_scope(grant: Grant, actor: Actor, resource: str, obj: Any) -> bool:
    spec = RESOURCES[resource]
    stage = grant.reached_state(actor.agency)
    if stage is not None and getattr(obj, f"{stage}_at") is None:
        return False
    if grant.scope is Scope.all:
        return True
    if grant.scope is Scope.municipality:
        return (
            actor.municipality_id is not None
            and spec.municipality_attr is not None
            and getattr(obj, spec.municipality_attr) == actor.municipality_id
        )
    return spec.owner_attr is not None and getattr(obj, spec.owner_attr) == actor.user_id


def can(policy: AccessPolicy, actor: Actor, action: str, resource: str, obj: Any) -> bool:
    """May the actor act on this object by its role's scope (break-glass grants aside: case
    routes decide through `scope_filter`, which also reads those)."""
    grant = can_type(policy, actor, action, resource)
    return grant is not None and _in_scope(grant, actor, resource, obj)


def scope_filter(
    policy: AccessPolicy, actor: Actor, action: str, resource: str, *, break_glass: bool = True
) -> ColumnElement[bool]:
    """The WHERE condition selecting exactly the objects `can()` would allow, plus, for case
    reads, the cases the actor holds an unexpired break-glass grant for."""
    grant = can_type(policy, actor, action, resource)
    if grant is None:
        return false()
    condition = _scope_condition(grant, actor, RESOURCES[resource])
    stage = grant.reached_state(actor.agency)
    if stage is not None:
        condition = and_(condition, getattr(RESOURCES[resource].model, f"{stage}_at").is_not(None))
    if break_glass and resource == "case" and _break_glass_opens(policy, grant, action):
        condition = or_(condition, CaseFile.id.in_(_active_break_glass(actor)))
    return condition


def _break_glass_opens(policy: AccessPolicy, grant: Grant, action: str) -> bool:
    return "break_glass" in grant.actions and action in policy.break_glass.opens


def _active_break_glass(actor: Actor):
    return select(BreakGlassGrant.case_id).where(
        BreakGlassGrant.user_id == actor.user_id, BreakGlassGrant.expires_at > utcnow()
    )


def _scope_condition(grant: Grant, actor: Actor, spec: ResourceSpec) -> ColumnElement[bool]:
    if grant.scope is Scope.all:
        return true()
    if grant.scope is Scope.municipality:
        if actor.municipality_id is None or spec.municipality_attr is None:
            return false()
        return getattr(spec.model, spec.municipality_attr) == actor.municipality_id
    if spec.owner_attr is None:
        return false()
    return getattr(spec.model, spec.owner_attr) == actor.user_id
