"""What you may do: one decision point for single objects and for lists.

`can()` answers "may this actor do X to this object"; `scope_filter()` answers "which
objects may this actor list" as a SQL condition. Both read the same grant and the same
resource spec. Routes use them through `authorize()` (see dependencies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, false, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from referral.authz.actor import Actor
from referral.authz.policy import AccessPolicy, Grant, Scope
from referral.authz.resources import RESOURCES, ResourceSpec
from referral.models import BreakGlassGrant, CaseFile
from referral.models.base import utcnow

__all__ = [
    "RESOURCES",
    "AccessPolicy",
    "Actor",
    "can",
    "can_type",
    "scope_filter",
    "scope_key",
    "scope_params",
    "scope_shape",
]


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


@dataclass(frozen=True, slots=True)
class _ScopeValues:
    """What a scope condition compares with: the actor's own values, or bind parameters."""

    user_id: Any
    municipality_id: Any
    now: Any


# Required: a prepared statement executed without `scope_params(actor)` fails, never falls
# back to some earlier actor's values.
_BOUND = _ScopeValues(
    user_id=bindparam("scope_user_id", required=True),
    municipality_id=bindparam("scope_municipality_id", required=True),
    now=bindparam("scope_now", required=True),
)


def scope_params(actor: Actor) -> dict[str, Any]:
    """The values of a bound scope condition (`scope_filter(..., bound=True)`)."""
    return {
        "scope_user_id": actor.user_id,
        "scope_municipality_id": actor.municipality_id,
        "scope_now": utcnow(),
    }


def scope_shape(actor: Actor) -> tuple[str, str, bool]:
    """What, besides the action, decides the form of the actor's bound scope condition:
    two actors with the same shape share one prepared statement."""
    return (actor.role, actor.agency, actor.municipality_id is None)


def scope_filter(
    policy: AccessPolicy,
    actor: Actor,
    action: str,
    resource: str,
    *,
    break_glass: bool = True,
    bound: bool = False,
    keyed: bool = False,
) -> ColumnElement[bool]:
    """The WHERE condition selecting exactly the objects `can()` would allow, plus, for case
    reads, the cases the actor holds an unexpired break-glass grant for.

    `bound=True` puts bind parameters where the actor's ids and the time go, so a statement
    built with it can be prepared once per `scope_shape` and run with `scope_params`.
    `keyed=True` states the scope's one value as a range, where `scope_key` names it."""
    grant = can_type(policy, actor, action, resource)
    if grant is None:
        return false()
    values = _BOUND if bound else _ScopeValues(actor.user_id, actor.municipality_id, utcnow())
    opened = resource == "case" and _break_glass_opens(policy, grant, action)
    condition = _scope_condition(grant, actor, RESOURCES[resource], values, keyed and not opened)
    stage = grant.reached_state(actor.agency)
    if stage is not None:
        condition = and_(condition, getattr(RESOURCES[resource].model, f"{stage}_at").is_not(None))
    if break_glass and opened:
        condition = or_(condition, CaseFile.id.in_(_active_break_glass(values)))
    return condition


def scope_key(policy: AccessPolicy, actor: Actor, action: str, resource: str) -> Any | None:
    """The column the actor's scope holds to one value (its municipality, or itself as the
    owner), when nothing else opens the scope (break glass); else None.

    A page ordered by this column, then by id, is read from their composite index, if the
    scope's condition is `scope_filter(..., keyed=True)`: the one value as a range
    (`BETWEEN v AND v`), the same rows. As an equality, PostgreSQL drops the column from
    the order, as fixed, and may walk the primary key instead, filtering: it assumes the
    scope's rows are spread evenly over the ids, and they are not when a municipality
    joined late, or one holds most of the cases, so its first page may skip every older
    case of every other municipality (ADR 0035)."""
    grant = can_type(policy, actor, action, resource)
    if grant is None or (resource == "case" and _break_glass_opens(policy, grant, action)):
        return None
    spec = RESOURCES[resource]
    if grant.scope is Scope.municipality and actor.municipality_id is not None:
        attr = spec.municipality_attr
    elif grant.scope is Scope.own:
        attr = spec.owner_attr
    else:
        return None
    return None if attr is None else getattr(spec.model, attr)


def _break_glass_opens(policy: AccessPolicy, grant: Grant, action: str) -> bool:
    return "break_glass" in grant.actions and action in policy.break_glass.opens


def _active_break_glass(values: _ScopeValues):
    return select(BreakGlassGrant.case_id).where(
        BreakGlassGrant.user_id == values.user_id, BreakGlassGrant.expires_at > values.now
    )


def _scope_condition(
    grant: Grant, actor: Actor, spec: ResourceSpec, values: _ScopeValues, keyed: bool
) -> ColumnElement[bool]:
    if grant.scope is Scope.all:
        return true()
    if grant.scope is Scope.municipality:
        if actor.municipality_id is None or spec.municipality_attr is None:
            return false()
        return _one_value(
            getattr(spec.model, spec.municipality_attr), values.municipality_id, keyed
        )
    if spec.owner_attr is None:
        return false()
    return _one_value(getattr(spec.model, spec.owner_attr), values.user_id, keyed)


def _one_value(column: Any, value: Any, keyed: bool) -> ColumnElement[bool]:
    return column.between(value, value) if keyed else column == value
