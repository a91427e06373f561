"""Keyset pagination over time-ordered (UUIDv7) ids: stable pages, no OFFSET scans."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select

MAX_LIMIT = 100
T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    cursor: uuid.UUID | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most 100")] = 50,
    cursor: Annotated[uuid.UUID | None, Query(description="next_cursor of the page before")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: uuid.UUID | None


def keyset(stmt: Select[Any], id_column: Any, params: PageParams) -> Select[Any]:
    if params.cursor is not None:
        stmt = stmt.where(id_column > params.cursor)
    return stmt.order_by(id_column).limit(params.limit + 1)


def split_page(
    rows: list[Any], params: PageParams, id_of: Any
) -> tuple[list[Any], uuid.UUID | None]:
    """Rows fetched with limit+1: the page, and the cursor of the next page if there is one."""
    if len(rows) > params.limit:
        rows = rows[: params.limit]
        return rows, id_of(rows[-1])
    return rows, None
