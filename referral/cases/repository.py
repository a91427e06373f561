"""Queries for cases, always through the actor's scope (a SQL filter, never a post-filter)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from types import SimpleNamespace
from typing import Any

from fastapi import Request
from sqlalchemy import (
    Date,
    String,
    Uuid,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from referral.authz.dependencies import Access
from referral.errors import NotFound, PreconditionFailed
from referral.json_rows import as_record, json_array, records
from referral.models import (
    CaseAssessment,
    CaseConsent,
    CaseFile,
    CaseNote,
    CaseReview,
    CaseScreening,
    Intervention,
    PanelDecision,
    SupportPlan,
)
from referral.models.base import utcnow
from referral.pagination import PageParams, keyset_params, prepared_keyset, split_page


async def case_in_scope(
    session: AsyncSession, access: Access, case_id: uuid.UUID, request: Request | None = None
) -> CaseFile:
    """The case if the actor may act on it, else 404. A case reached only through a
    break-glass grant marks the request, so its audit events say so."""
    statement = access.prepared("case_in_scope", lambda: _in_scope_statement(access, CaseFile))
    row = (await session.exec(statement, params=_in_scope_params(access, case_id))).first()
    return _found(row, request)[0]


# The statistics person of an earlier referral of the same person, found by the INSERT
# itself rather than a query before it; a new one otherwise. The person's index under the
# blind-index key, or under the previous key while the indexes move to a new one.
_EARLIER_PERSON = (
    sa_select(CaseFile.stat_person)
    .where(
        col(CaseFile.blind_index).in_(
            [
                bindparam("earlier_blind_index", type_=String),
                bindparam("same_person_as", type_=String),
            ]
        )
    )
    .limit(1)
    .scalar_subquery()
)
_CASE_VALUES = {
    column.name: bindparam(column.name, type_=column.type)
    for column in CaseFile.__table__.columns
    if column.name != "stat_person"
} | {"stat_person": func.coalesce(_EARLIER_PERSON, bindparam("new_stat_person", type_=Uuid))}
_CASE_INSERT = sa_insert(CaseFile.__table__).values(_CASE_VALUES)
_CASE_DEFAULTS = dict.fromkeys(CaseFile.__table__.columns.keys()) | {"version": 1}
del _CASE_DEFAULTS["stat_person"]


def case_params(*, same_person_as: str | None = None, **values: Any) -> dict[str, Any]:
    """The parameters of a new case's INSERT (`insert_case`, `case_insert_for_each`)."""
    unknown = values.keys() - _CASE_DEFAULTS.keys()
    if unknown:
        raise ValueError(f"case_file has no column {sorted(unknown)}")
    params = _CASE_DEFAULTS | values
    params["earlier_blind_index"] = params["blind_index"]
    params["same_person_as"] = same_person_as or params["blind_index"]
    params["new_stat_person"] = uuid.uuid4()
    return params


async def insert_case(session: AsyncSession, **values: Any) -> None:
    """A new case, as one prebuilt INSERT: a referral needs no ORM object, and building and
    flushing one was about a third of an intake's CPU. Columns not given are NULL;
    `stat_person` is that of an earlier referral whose blind index is this one's or
    `same_person_as` (the person's index under the previous key), if there is one."""
    params = case_params(**values)
    connection = await session.connection()
    await connection.execute(_CASE_INSERT, params)


def case_insert_for_each(rows: Any) -> Any:
    """`insert_case`'s INSERT as one new case for each row of `rows` (a selectable: none,
    or one), returning the case's id: a referral's case written only if its claim was."""
    return insert_for_each(CaseFile.__table__, _CASE_VALUES, rows)


def insert_for_each(table: Any, values: dict[str, Any], rows: Any) -> Any:
    """An INSERT of one row of `values` (column name: bound value or expression) for each
    row of `rows`, returning the new row's id."""
    names = list(values)
    chosen = sa_select(*(values[name] for name in names)).select_from(rows)
    return sa_insert(table).from_select(names, chosen).returning(table.c.id)


def touch_where(columns: frozenset[str], condition: Any) -> Any:
    """`touch_case`'s UPDATE of `columns` at the expected version, where `condition` also
    holds; its parameters are `touch_params`'."""
    return _touch_statement(columns, True).where(condition)


def touch_params(case_id: uuid.UUID, expected_version: int | None, **values: Any) -> dict[str, Any]:
    return {
        **values,
        "updated_at": utcnow(),
        "case_id": case_id,
        "expected_version": expected_version,
    }


async def insert_row(session: AsyncSession, model: Any, **values: Any) -> Any:
    """A new row of `model`, every column given, as a plain INSERT; the row comes back as a
    read-only record. An ORM object costs more to build and to flush than the INSERT."""
    missing = model.__table__.columns.keys() - values.keys()
    if missing:  # the model's Python defaults do not apply here
        raise ValueError(f"{model.__tablename__}: no value for {sorted(missing)}")
    connection = await session.connection()
    await connection.execute(sa_insert(model.__table__), values)
    return as_record(model, tuple(values), tuple(values.values()))


def lifecycle_facts(case_id: Any) -> tuple[Any, ...]:
    """What the lifecycle's guards ask of a case, as columns on its id."""
    return (
        sa_select(PanelDecision.decision)
        .where(PanelDecision.case_id == case_id)
        .order_by(col(PanelDecision.id).desc())
        .limit(1)
        .scalar_subquery()
        .label("decision"),
        exists()
        .where(CaseConsent.case_id == case_id, col(CaseConsent.withdrawn_on).is_(None))
        .label("consent"),
        exists()
        .where(Intervention.case_id == case_id, col(Intervention.status) != "stopped")
        .label("intervention"),
        exists().where(SupportPlan.case_id == case_id).label("plan"),
        exists().where(CaseScreening.case_id == case_id).label("screening"),
        exists().where(CaseAssessment.case_id == case_id).label("assessment"),
    )


_FACT_NAMES = tuple(fact.name for fact in lifecycle_facts(CaseFile.id))
_FACTS = len(_FACT_NAMES)


async def case_with_facts(
    session: AsyncSession,
    access: Access,
    case_id: uuid.UUID,
    request: Request,
    *,
    parts: bool,
    rereferrals: bool,
) -> tuple[Any, Any, CaseParts | None]:
    """`case_in_scope` and, in the same statement, the lifecycle's facts about the case
    (`lifecycle_facts`) and, with `parts`, the records `load_parts` would read: a transition
    needs the first two and answers with the third. The case comes back as a record."""
    return await _case_row(session, access, case_id, request, True, parts, rereferrals)


async def case_to_read(
    session: AsyncSession, access: Access, case_id: uuid.UUID, request: Request
) -> Any:
    """`case_in_scope` for a route that only reads: the same statement and rule, the case
    as a read-only record through Core instead of an ORM object (ADR 0012)."""
    statement = access.prepared("case_to_read", lambda: _in_scope_statement(access, *_CASE_COLUMNS))
    connection = await session.connection()
    row = (await connection.execute(statement, _in_scope_params(access, case_id))).first()
    return as_record(CaseFile, _CASE_NAMES, _found(row, request))


_CASE_COLUMNS = tuple(CaseFile.__table__.columns)
_CASE_NAMES = tuple(column.name for column in _CASE_COLUMNS)


def _in_scope_params(access: Access, case_id: uuid.UUID) -> dict[str, Any]:
    return {"case_id": case_id, **access.scope_params()}


def _found(row: Any, request: Request | None) -> Any:
    if row is None:
        raise NotFound("No such case.")
    if not row.in_own_scope and request is not None:
        request.state.audit_purpose = "break_glass"
    return row


def _in_scope_statement(access: Access, *columns: Any) -> Any:
    own_scope = access.scope_without_break_glass(bound=True)
    in_own_scope = case((own_scope, literal(True)), else_=literal(False)).label("in_own_scope")
    return sa_select(*columns, in_own_scope).where(
        CaseFile.id == bindparam("case_id", type_=Uuid), access.filter(bound=True)
    )


async def part_of_case(session: AsyncSession, model: Any, part_id: uuid.UUID, case_id: uuid.UUID):
    part = (
        await session.exec(select(model).where(model.id == part_id, model.case_id == case_id))
    ).first()
    if part is None:
        raise NotFound("No such record on this case.")
    return part


async def touch_case(
    session: AsyncSession, case: CaseFile, expected_version: int | None, **values: Any
) -> int:
    """Bump the case's version with `values`; with an expected version, only if it matches.
    `case` (an ORM object or a record) is brought up to date.

    Every write to a case or its parts goes through here, so writers serialise on the case
    row and each response can carry the case's new ETag.
    """
    params = touch_params(case.id, expected_version, **values)
    now = params["updated_at"]
    stmt = _touch_statement(frozenset(values), expected_version is not None)
    # Run as a plain statement: the ORM's version of it would search the session for the
    # rows it changed; the one it changed is `case`, brought up to date here.
    connection = await session.connection()
    new_version = (await connection.execute(stmt, params)).scalar_one_or_none()
    if new_version is None:
        raise PreconditionFailed("The case was changed by someone else; read it again.")
    # A record read through Core (json_rows.as_record) is simply updated; an ORM object is
    # told the values are committed, so that the session does not write them again.
    set_value = setattr if isinstance(case, SimpleNamespace) else set_committed_value
    for name, value in {**values, "updated_at": now, "version": new_version}.items():
        set_value(case, name, value)
    return new_version


@cache
def _touch_statement(columns: frozenset[str], checks_version: bool) -> Any:
    """`touch_case`'s UPDATE for one set of columns, built once: building it anew was a
    tenth of a transition's CPU."""
    table = CaseFile.__table__
    stmt = update(table).where(table.c.id == bindparam("case_id"))
    if checks_version:
        stmt = stmt.where(table.c.version == bindparam("expected_version"))
    assigned = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    updated_at = bindparam("updated_at", type_=table.c.updated_at.type)
    stmt = stmt.values(assigned | {"updated_at": updated_at, "version": table.c.version + 1})
    return stmt.returning(table.c.version)


@dataclass
class CaseParts:
    screening: CaseScreening | None
    decisions: list[PanelDecision]
    consents: list[CaseConsent]
    plan: SupportPlan | None
    interventions: list[Intervention]
    reviews: list[CaseReview]
    notes: list[CaseNote]
    assessments: list[CaseAssessment]
    rereferrals: list[CaseFile] | None = None


async def _all(session: AsyncSession, stmt) -> list:
    return list((await session.exec(stmt)).all())


_PARTS = (
    CaseScreening,
    PanelDecision,
    CaseConsent,
    SupportPlan,
    Intervention,
    CaseReview,
    CaseNote,
    CaseAssessment,
)
_ORDER = {CaseReview: CaseReview.due_on}
_IN_SECTIONS = (CaseNote, CaseAssessment)
_REREFERRAL_COLUMNS = ("id", "state", "submitted_at")


@cache
def _parts_columns(dialect: str, sections: frozenset[str]) -> tuple[Any, ...]:
    """The eight record arrays of one case (`:case_id`), built once per dialect and set of
    readable sections: building them was most of a read's SQL cost."""
    case_id = bindparam("case_id", type_=Uuid)
    columns = []
    for model in _PARTS:
        condition = model.case_id == case_id
        if model in _IN_SECTIONS:
            condition = and_(condition, in_readable_sections(model, sections))
        columns.append(json_array(model, condition, [_ORDER.get(model, model.id)], dialect))
    return tuple(columns)


@cache
def _parts_statement(dialect: str, sections: frozenset[str]) -> Any:
    # reused as is, the statement keeps its cache key: no walk of it on each execution
    return sa_select(*_parts_columns(dialect, sections))


async def load_parts(
    session: AsyncSession,
    case: CaseFile,
    sections: frozenset[str],
    rereferrals_for: Access | None = None,
) -> CaseParts:
    """Every record of the case the actor may read, in one statement (ADR 0012); with
    `rereferrals_for`, also the possible re-referrals within that access's own scope."""
    connection = await session.connection()
    dialect = connection.dialect.name
    statement = _parts_statement(dialect, sections)
    params: dict[str, Any] = {"case_id": case.id}
    if rereferrals_for is not None:
        statement = rereferrals_for.prepared(
            "case_parts_with_rereferrals",
            lambda: sa_select(
                *_parts_columns(dialect, sections), _rereferrals(rereferrals_for, dialect)
            ),
            dialect,
            sections,
        )
        params |= rereferrals_for.scope_params()
    found = (await connection.execute(statement, params)).one()
    return _parts(found, rereferrals_for is not None)


async def case_with_parts(
    session: AsyncSession,
    access: Access,
    case_id: uuid.UUID,
    request: Request,
    rereferrals: bool,
) -> tuple[Any, CaseParts]:
    """`case_to_read` and `load_parts` in one statement: the case under the access rule,
    as a read-only record, with every record of it the actor may read (and, with
    `rereferrals`, its possible re-referrals). One round trip where a read made two."""
    case, _, parts = await _case_row(session, access, case_id, request, False, True, rereferrals)
    return case, parts


async def _case_row(
    session: AsyncSession,
    access: Access,
    case_id: uuid.UUID,
    request: Request,
    facts: bool,
    parts: bool,
    rereferrals: bool,
) -> tuple[Any, Any, CaseParts | None]:
    """The case under the access rule as a record, the lifecycle's facts, and its records:
    one statement with the facts (`lifecycle_facts`) and the records as asked."""
    connection = await session.connection()
    dialect = connection.dialect.name
    rereferrals = parts and rereferrals
    statement = case_row_statement(access, dialect, facts, parts, rereferrals)
    row = _found(
        (await connection.execute(statement, _in_scope_params(access, case_id))).first(), request
    )
    return case_of_row(row, facts, parts, rereferrals)


def case_row_statement(
    access: Access, dialect: str, facts: bool, parts: bool, rereferrals: bool
) -> Any:
    """The statement of `_case_row`, prepared once per scope shape: the case under the
    access rule (`:case_id` and the scope's parameters), its columns, then as asked the
    lifecycle's facts, its records and its re-referrals (the order `case_of_row` reads),
    then `in_own_scope`."""
    sections = access.readable_sections if parts else frozenset()

    def build() -> Any:
        columns = _CASE_COLUMNS
        if facts:
            columns = (*columns, *lifecycle_facts(CaseFile.id))
        if parts:
            columns = (*columns, *_parts_columns(dialect, sections))
        if rereferrals:
            columns = (*columns, _rereferrals(access, dialect))
        return _in_scope_statement(access, *columns)

    return access.prepared("case_row", build, dialect, sections, facts, parts, rereferrals)


def case_of_row(
    row: Sequence[Any], facts: bool, parts: bool, rereferrals: bool
) -> tuple[Any, Any, CaseParts | None]:
    """The case of a `case_row_statement` row as a record, the lifecycle's facts (by their
    names in `lifecycle_facts`; None unless asked), and its records. The row is read by
    position, so a driver's row will do as well as SQLAlchemy's."""
    width = len(_CASE_COLUMNS)
    given = row[width : width + _FACTS]
    found = SimpleNamespace(**dict(zip(_FACT_NAMES, given, strict=True))) if facts else None
    read = _parts(row[width + (_FACTS if facts else 0) :], rereferrals) if parts else None
    return as_record(CaseFile, _CASE_NAMES, row), found, read


def _parts(found: Sequence[Any], rereferrals: bool) -> CaseParts:
    """The record arrays of `_parts_columns` (then the re-referrals, if asked) as records."""
    screening, decisions, consents, plan, interventions, reviews, notes, assessments = found[:8]
    return CaseParts(
        screening=next(iter(records(CaseScreening, screening)), None),
        decisions=records(PanelDecision, decisions),
        consents=records(CaseConsent, consents),
        plan=next(iter(records(SupportPlan, plan)), None),
        interventions=records(Intervention, interventions),
        reviews=records(CaseReview, reviews),
        notes=records(CaseNote, notes),
        assessments=records(CaseAssessment, assessments),
        rereferrals=records(CaseFile, found[8]) if rereferrals else None,
    )


def _rereferrals(access: Access, dialect: str, across_keys: bool = False) -> Any:
    """The other cases of the same person as case `:case_id` that the access's own scope
    reaches, as a JSON array: those with its blind index or, `across_keys`, with the
    person's index under the key (`:index_now`) or the previous key (`:index_before`)."""
    if across_keys:
        same_index = col(CaseFile.blind_index).in_(
            [bindparam("index_now", type_=String), bindparam("index_before", type_=String)]
        )
    else:
        same_index = CaseFile.blind_index == (
            sa_select(CaseFile.blind_index)
            .where(CaseFile.id == bindparam("case_id", type_=Uuid))
            .correlate(None)
            .scalar_subquery()
        )
    same_person = and_(
        same_index,
        CaseFile.id != bindparam("case_id", type_=Uuid),
        access.filter(bound=True),
    )
    return json_array(CaseFile, same_person, [CaseFile.id], dialect, _REREFERRAL_COLUMNS)


async def rereferrals_across_keys(
    session: AsyncSession, access: Access, case_id: uuid.UUID, indexes: list[str]
) -> list[Any]:
    """While the blind index moves to a new key (`referral keys reindex`), the person's
    other cases may hold their index under either key: the possible re-referrals of case
    `case_id` under both of the person's `indexes` (now, then before)."""
    connection = await session.connection()
    dialect = connection.dialect.name
    statement = access.prepared(
        "rereferrals_across_keys",
        lambda: sa_select(_rereferrals(access, dialect, across_keys=True)),
        dialect,
    )
    params = {"case_id": case_id, "index_now": indexes[0], "index_before": indexes[-1]}
    found = (await connection.execute(statement, params | access.scope_params())).one()
    return records(CaseFile, found[0])


def in_readable_sections(model: Any, sections: frozenset[str]) -> Any:
    """The one rule for sectioned records (notes, assessments): only the actor's sections.

    One bound value per section, not an expanding list: the statements that hold this are
    built once per set of sections, and an expanding IN is re-rendered on every execution."""
    if not sections:
        return false()
    return col(model.section).in_([literal(section, String) for section in sorted(sections)])


async def sectioned_records(
    session: AsyncSession, model: Any, case_id: uuid.UUID, sections: frozenset[str]
) -> list:
    """The notes or assessments of a case in the actor's readable sections, oldest first."""
    if not sections:
        return []
    return await _all(
        session,
        select(model)
        .where(model.case_id == case_id, in_readable_sections(model, sections))
        .order_by(model.id),
    )


def overdue_count(today: Any) -> Any:
    return (
        select(func.count())
        .select_from(CaseReview)
        .where(
            CaseReview.case_id == CaseFile.id,
            col(CaseReview.done_on).is_(None),
            CaseReview.due_on < today,
        )
        .correlate(CaseFile)
        .scalar_subquery()
    )


# What a list item shows, and nothing more: a page of 50 whole cases is 2,000 values to load,
# and 50 ORM objects cost more than the rest of the request.
_LISTED = tuple(
    CaseFile.__table__.c[name]
    for name in (
        "id",
        "state",
        "urgency",
        "primary_concern",
        "subject_age_band",
        "given_name_enc",
        "family_name_enc",
        "purged_at",
        "submitted_at",
        "closure_outcome",
        "closed_at",
        "version",
    )
)
_LISTED_NAMES = tuple(column.name for column in _LISTED)
LISTED_NAMES = (*_LISTED_NAMES, "overdue")  # a listed row's values, in order


async def list_cases(
    session: AsyncSession,
    access: Access,
    params: PageParams,
    *,
    states: list[str] | None,
    urgency: str | None,
    municipality_id: uuid.UUID | None,
    overdue_only: bool,
) -> tuple[list[tuple[Any, int]], uuid.UUID | None]:
    filters = {
        "states": states or None,
        "urgency": urgency,
        "municipality_id": municipality_id,
        "overdue_only": overdue_only or None,
    }
    used = frozenset(name for name, value in filters.items() if value is not None)
    with_cursor = params.cursor is not None
    statement = access.prepared(
        "case_list", lambda: list_statement(access, used, with_cursor), used, with_cursor
    )
    values = list_values(access, params, **filters)
    connection = await session.connection()
    found = (await connection.execute(statement, values)).all()
    return listed_page(found, params)


def listed_page(found: Sequence[Any], params: PageParams) -> tuple[list[Any], uuid.UUID | None]:
    """The rows of `list_statement` (limit + 1 of them): the page's rows, each its
    `LISTED_NAMES` columns and then its overdue reviews, and the next page's cursor, if any."""
    return split_page(list(found), params, listed_id)


def listed_id(row: Sequence[Any]) -> uuid.UUID:
    return row[0]  # "id" leads LISTED_NAMES


def listed_case(row: Sequence[Any]) -> Any:
    """A row of `listed_page` as a read-only case record (the referrer's view reads it)."""
    return as_record(CaseFile, _LISTED_NAMES, row)


def list_values(access: Access, params: PageParams, **filters: Any) -> dict[str, Any]:
    """The values of `list_statement` for a page under `access`."""
    return {**filters, **keyset_params(params), **access.scope_params(), "today": date.today()}


def list_statement(access: Access, filters: frozenset[str], with_cursor: bool) -> Any:
    """A page of the cases in scope, with the filters named in `filters` as parameters."""
    today = bindparam("today", type_=Date)
    stmt = sa_select(*_LISTED, overdue_count(today).label("overdue"))
    key = access.scope_key()  # the page read from (key, id)'s index (authz.scope_key)
    stmt = stmt.where(access.filter(bound=True, keyed=key is not None))
    if "states" in filters:
        stmt = stmt.where(col(CaseFile.state).in_(bindparam("states", expanding=True)))
    if "urgency" in filters:
        stmt = stmt.where(CaseFile.urgency == bindparam("urgency"))
    if "municipality_id" in filters:
        stmt = stmt.where(CaseFile.municipality_id == bindparam("municipality_id"))
    if "overdue_only" in filters:
        stmt = stmt.where(overdue_count(today) > 0)
    return prepared_keyset(stmt, CaseFile.id, with_cursor, within=key)
