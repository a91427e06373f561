"""A table's rows as one JSON array inside a bigger statement, and back to typed records.

A case read needs eight record tables. One SELECT holding a JSON aggregate per table
replaces eight round trips and eight ORM loads (ADR 0012). The records come back as plain
read-only objects with the same attribute names and Python types as the table model, and
its `__tablename__`, so views and `crypto.open_field` treat them like loaded rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, Column, TypeDecorator, func, literal_column, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement


def json_array(
    model: Any,
    where: ColumnElement[bool],
    order_by: Sequence[Any],
    dialect: str,
    columns: Sequence[str] | None = None,
) -> ColumnElement[Any]:
    """A scalar subquery: the matching rows of `model`, in order, as a JSON array (never
    NULL). `columns` narrows the fields; the default is every column. Bound values choose
    the rows, never the enclosing statement's: the subquery is not correlated, so it can
    read the table the enclosing statement reads (a case's possible re-referrals)."""
    table = model.__table__
    chosen = [table.c[name] for name in columns] if columns else list(table.columns)
    if dialect == "postgresql":
        # ARRAY(SELECT ...), not json_agg: the same array, without an aggregate for the
        # executor to set up on every read, which cost PostgreSQL more than running the
        # eight subqueries (its memory contexts and transition state; ADR 0035)
        pairs = [part for c in chosen for part in (literal_column(f"'{c.name}'"), c)]
        rows = select(func.json_build_object(*pairs)).where(where).order_by(*order_by)
        elements = func.array(rows.correlate(None).scalar_subquery())
        return type_coerce(func.array_to_json(elements), JSON)
    else:
        # SQLite: a JSON column is text until json() marks it; json_group_array keeps the
        # order of the ordered subquery it reads.
        pairs = [
            part
            for c in chosen
            for part in (literal_column(f"'{c.name}'"), func.json(c) if _is_json(c) else c)
        ]
        rows = select(func.json_object(*pairs).label("record")).where(where).order_by(*order_by)
        rows = rows.correlate(None)
        array = select(func.json_group_array(func.json(rows.subquery().c.record)))
        array = array.correlate(None)
    return type_coerce(array.scalar_subquery(), JSON)


def records(model: Any, array: list[dict[str, Any]] | None) -> list[Any]:
    """The rows of one `json_array` as typed records of `model`."""
    record_type, decoders = _record_type(model)
    found = []
    for raw in array or ():
        for name, decode in decoders:
            value = raw.get(name)
            if value is not None:
                raw[name] = decode(value)
        found.append(record_type(**raw))
    return found


def as_record(model: Any, names: Sequence[str], row: Sequence[Any]) -> Any:
    """The leading values of `row`, columns of `model` named by `names` and already typed,
    as a read-only record: what a read or a list shows without the cost of an ORM object
    per row. Values after the named ones (a computed column) are left out."""
    record_type, _ = _record_type(model)
    return record_type(**dict(zip(names, row, strict=False)))


def _is_json(column: Column) -> bool:
    return isinstance(column.type, JSON)


def _utc(text: str) -> datetime:
    # PostgreSQL writes "2026-11-21T09:30:00.1+00:00", SQLite "2026-11-21 09:30:00.100000".
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_DECODERS: dict[type, Callable[[Any], Any]] = {
    uuid.UUID: lambda value: value if isinstance(value, uuid.UUID) else uuid.UUID(value),
    datetime: _utc,
    date: date.fromisoformat,
    bool: bool,
}


@cache
def _record_type(model: Any) -> tuple[type, list[tuple[str, Callable[[Any], Any]]]]:
    decoders = []
    for column in model.__table__.columns:
        column_type = column.type
        if isinstance(column_type, TypeDecorator):
            column_type = column_type.impl_instance
        try:
            python_type = column_type.python_type
        except NotImplementedError:
            continue
        if python_type in _DECODERS:
            decoders.append((column.name, _DECODERS[python_type]))
    record_type = type(
        f"{model.__name__}Record", (SimpleNamespace,), {"__tablename__": model.__tablename__}
    )
    return record_type, decoders
