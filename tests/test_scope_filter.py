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

from referral.authz import RESOURCES, scope_filter, scope_key, scope_params, scope_shape
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


@pytest.mark.parametrize(("role", "resource", "action"), GRANTED)
@pytest.mark.parametrize("agency", [Agency.police, Agency.municipality])
@pytest.mark.parametrize("municipality", [uuid.uuid4(), None], ids=["local", "national"])
def test_a_keyed_scope_is_the_same_condition_with_its_one_value_as_a_range(
    role, resource, action, agency, municipality
):
    """`keyed=True` only restates the column `scope_key` names: `= v` becomes `BETWEEN v
    AND v`, the same rows; a scope with no such column is left as it is."""
    actor = _actor(role, agency, municipality)
    key = scope_key(POLICY, actor, action, resource)
    for bound in (False, True):
        plain = _sql(scope_filter(POLICY, actor, action, resource, bound=bound), sqlite.dialect())
        keyed = _sql(
            scope_filter(POLICY, actor, action, resource, bound=bound, keyed=True),
            sqlite.dialect(),
        )
        if key is None:
            assert keyed == plain
        else:
            column = f"{key.table.name}.{key.name}"
            assert plain.count(f"{column} = ?") == 1, plain
            assert keyed == plain.replace(f"{column} = ?", f"{column} BETWEEN ? AND ?")


def test_the_scope_key_is_the_column_a_scope_holds_to_one_value():
    town = uuid.uuid4()
    coordinator = _actor(Role.coordinator, Agency.municipality, town)
    assert scope_key(POLICY, coordinator, "list", "case") is CaseFile.municipality_id
    panel = _actor(Role.panel_member, Agency.police, town)
    assert scope_key(POLICY, panel, "list", "case") is CaseFile.municipality_id
    referrer = _actor(Role.referrer, Agency.education, town)
    assert scope_key(POLICY, referrer, "list", "case") is CaseFile.referrer_user_id
    # break glass opens a case read beyond the municipality: no one column holds it
    assert scope_key(POLICY, coordinator, "read", "case") is None
    # no municipality, or a national scope: nothing to hold
    national = _actor(Role.coordinator, Agency.municipality, None)
    assert scope_key(POLICY, national, "list", "case") is None
    auditor = _actor(Role.auditor, Agency.municipality, None)
    assert scope_key(POLICY, auditor, "search", "audit") is None
    # no grant at all
    assert scope_key(POLICY, referrer, "erase", "case") is None


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
