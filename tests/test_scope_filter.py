"""The scope rule, literal or bound: one condition, and a prepared one never runs unbound.

Case routes run the scope as a statement prepared once per scope shape (ADR 0012). These
checks hold that statement to the literal condition every other query uses, for every role,
agency and action in the shipped policy; the access matrix holds both to HTTP.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InvalidRequestError

from referral.authz import RESOURCES, scope_filter, scope_params, scope_shape
from referral.authz.actor import Actor
from referral.authz.dependencies import Access
from referral.authz.policy import load_access_policy
from referral.models import CaseFile
from referral.models.enums import Agency, Role

POLICY = load_access_policy(Path(__file__).resolve().parent.parent / "policies" / "access.yaml")


def _actor(role: str, agency: str, municipality: uuid.UUID | None) -> Actor:
    return Actor(
        user_id=uuid.uuid4(),
        username="synthetic",
        role=role,
        organisation_id=uuid.uuid4(),
        agency=agency,
        municipality_id=municipality,
        session_id=uuid.uuid4(),
    )


def _sql(condition, dialect) -> str:
    """The condition's SQL with every parameter name blanked: its form, not its names."""
    compiled = str(select(CaseFile.id).where(condition).compile(dialect=dialect))
    return re.sub(r"(:|%\()\w+(\)s)?|\$\d+|\?", "?", compiled)


GRANTED = [
    (role, resource, action)
    for role in Role
    for resource, spec in RESOURCES.items()
    for action in sorted(spec.actions)
    if (grant := POLICY.grant(role, resource)) is not None and action in grant.actions
]


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "pg"])
@pytest.mark.parametrize(("role", "resource", "action"), GRANTED)
@pytest.mark.parametrize("agency", [Agency.police, Agency.municipality])
@pytest.mark.parametrize("municipality", [uuid.uuid4(), None], ids=["local", "national"])
def test_bound_scope_equals_literal_scope(dialect, role, resource, action, agency, municipality):
    actor = _actor(role, agency, municipality)
    literal = scope_filter(POLICY, actor, action, resource)
    bound = scope_filter(POLICY, actor, action, resource, bound=True)
    assert _sql(bound, dialect) == _sql(literal, dialect)


def test_a_bound_scope_run_without_the_actor_s_values_fails():
    actor = _actor(Role.coordinator, Agency.municipality, uuid.uuid4())
    bound = scope_filter(POLICY, actor, "read", "case", bound=True)
    compiled = select(CaseFile.id).where(bound).compile(dialect=postgresql.dialect())
    with pytest.raises(InvalidRequestError, match="scope_"):
        compiled.construct_params({})
    values = compiled.construct_params(scope_params(actor))
    assert values["scope_municipality_id"] == actor.municipality_id
    assert values["scope_user_id"] == actor.user_id


def test_actors_share_a_prepared_statement_only_when_their_scope_has_the_same_form():
    town = uuid.uuid4()
    built: list[str] = []

    def prepared(actor: Actor, action: str = "read") -> object:
        access = Access(actor, POLICY, "case", action, POLICY.grant(actor.role, "case"))
        return access.prepared("probe", lambda: built.append(actor.role) or object())

    first = prepared(_actor(Role.coordinator, Agency.municipality, town))
    assert prepared(_actor(Role.coordinator, Agency.municipality, uuid.uuid4())) is first
    assert prepared(_actor(Role.coordinator, Agency.municipality, town), "list") is not first
    assert prepared(_actor(Role.panel_member, Agency.police, town)) is not first
    assert prepared(_actor(Role.panel_member, Agency.health, town)) is not first
    assert scope_shape(_actor(Role.coordinator, Agency.municipality, None)) != scope_shape(
        _actor(Role.coordinator, Agency.municipality, town)
    )
    assert len(built) == 4
