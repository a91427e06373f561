"""Keyset pagination over time-ordered (UUIDv7) ids: stable pages, no OFFSET scans."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, bindparam

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    cursor: uuid.UUID | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most 100")] = DEFAULT_LIMIT,
    cursor: Annotated[uuid.UUID | None, Query(description="next_cursor of the page before")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: uuid.UUID | None


def keyset(stmt: Select[Any], id_column: Any, params: PageParams) -> Select[Any]:
    return prepared_keyset(stmt, id_column, params.cursor is not None).params(keyset_params(params))


def prepared_keyset(
    stmt: Select[Any], id_column: Any, with_cursor: bool, within: Any | None = None
) -> Select[Any]:
    """The page as `:cursor` and `:limit`, for a statement built once (run it with
    `keyset_params`): one more row than the page, to know whether another follows.
    `within`: a column the statement holds to one value, ordered by first (`scope_key`)."""
    if with_cursor:
        stmt = stmt.where(id_column > bindparam("cursor", required=True))
    order = (id_column,) if within is None else (within, id_column)
    return stmt.order_by(*order).limit(bindparam("limit", required=True))


def keyset_params(params: PageParams) -> dict[str, Any]:
    return {"cursor": params.cursor, "limit": params.limit + 1}


def split_page(
    rows: list[Any], params: PageParams, id_of: Any
) -> tuple[list[Any], uuid.UUID | None]:
    """Rows fetched with limit+1: the page, and the cursor of the next page if there is one."""
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, id_of(rows[-1])
    return rows, None
