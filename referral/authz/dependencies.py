"""`authorize(resource, action)`: the dependency every non-public route goes through.

It authenticates (via current_actor), refuses with 403 when the role has no grant for the
action at all, and hands the route an `Access` that scopes queries and checks objects with
the same rule (an object outside scope is 404, never 403: its existence is not disclosed).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.sql.elements import ColumnElement

from referral import authz
from referral.auth.dependencies import current_actor
from referral.authz.actor import Actor
from referral.authz.policy import AccessPolicy, Grant
from referral.errors import Forbidden, NotFound
from referral.routing import dependency_calls


@dataclass(frozen=True, slots=True)
class Access:
    actor: Actor
    policy: AccessPolicy
    resource: str
    action: str
    grant: Grant

    def filter(self, *, bound: bool = False, keyed: bool = False) -> ColumnElement[bool]:
        return authz.scope_filter(
            self.policy, self.actor, self.action, self.resource, bound=bound, keyed=keyed
        )

    def scope_key(self) -> Any | None:
        """The column the scope holds to one value, if any (`authz.scope_key`)."""
        return authz.scope_key(self.policy, self.actor, self.action, self.resource)

    def prepared(self, name: str, build: Callable[[], Any], *variant: Hashable) -> Any:
        """A statement built once per policy, `name` and scope shape, from bound scope
        conditions (`filter(bound=True)`), with `variant` naming whatever else shapes it;
        run it with `scope_params()`. Building and hashing the condition anew was the
        largest cost of a case read (ADR 0012)."""
        key = (name, self.resource, self.action, authz.scope_shape(self.actor), variant)
        return self.policy.prepared(key, build)

    def scope_params(self) -> dict[str, Any]:
        return authz.scope_params(self.actor)

    def policy_filter(self, action: str) -> ColumnElement[bool]:
        """The scope of another action on the same resource, as the same actor."""
        return authz.scope_filter(self.policy, self.actor, action, self.resource)

    def scope_without_break_glass(self, *, bound: bool = False) -> ColumnElement[bool]:
        return authz.scope_filter(
            self.policy, self.actor, self.action, self.resource, break_glass=False, bound=bound
        )

    @property
    def readable_sections(self) -> frozenset[str]:
        return self.policy.readable_sections(self.grant, self.actor.agency)

    @property
    def writable_sections(self) -> frozenset[str]:
        return self.policy.writable_sections(self.grant, self.actor.agency)

    def require_agency(self, part: Any) -> None:
        """For agency-bound actions: the part must be assigned to the actor's agency."""
        if self.action in self.grant.agency_bound and part.agency != self.actor.agency:
            raise Forbidden(f"Only the assigned agency may {self.action.replace('_', ' ')}.")

    def visible(self, obj: Any) -> Any:
        """The object if the actor may act on it; 404 if it is missing or out of scope."""
        if obj is None or not authz.can(self.policy, self.actor, self.action, self.resource, obj):
            raise NotFound(f"No such {self.resource}.")
        return obj


class authorize:
    """Dependency factory. A class so the route inventory test can recognise it."""

    def __init__(self, resource: str, action: str) -> None:
        if action not in authz.RESOURCES[resource].actions:
            raise ValueError(f"{resource} has no action {action!r}")
        self.resource = resource
        self.action = action

    async def __call__(self, request: Request, actor: Actor = Depends(current_actor)) -> Access:
        access = access_of(request.app.state.access_policy, actor, self.resource, self.action)
        if access is None:
            raise Forbidden(f"Your role may not {self.action} {self.resource} records.")
        return access


def access_of(policy: AccessPolicy, actor: Actor, resource: str, action: str) -> Access | None:
    """The actor's access to `action` some objects of `resource`; None if its role has no
    grant for that at all (the route's 403)."""
    grant = authz.can_type(policy, actor, action, resource)
    return None if grant is None else Access(actor, policy, resource, action, grant)


def route_permission(route: Any) -> str | None:
    """`resource.action` of the guard on a route (how its denials are named in the trail)."""
    for call in dependency_calls(getattr(route, "dependant", None)):
        if isinstance(call, authorize):
            return f"{call.resource}.{call.action}"
    return None
