"""/api/v1/stats: the catalogue, queries (JSON or CSV), and builds of snapshots."""

import csv
import io
import uuid
from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import Response

from referral import audit
from referral.authz.dependencies import Access, authorize
from referral.db import SessionDep
from referral.errors import BadRequest, invalid_field, problem_responses
from referral.pagination import MAX_LIMIT
from referral.routing import API_PREFIX, ProblemRoute, answered_first
from referral.stats import builds, lean_query, service
from referral.stats.policy import ReportingPolicy
from referral.stats.schemas import SnapshotBuildOut
from referral.stats.snapshot import FutureRelease, refuse_future

router = APIRouter(prefix=f"{API_PREFIX}/stats", tags=["statistics"], route_class=ProblemRoute)


def _can(action: str) -> Any:
    return Annotated[Access, Depends(authorize("stats", action))]


def _policy(request: Request) -> ReportingPolicy:
    return request.app.state.reporting_policy


@router.get(
    "/catalogue",
    summary="What may be asked: measures, tables, released periods",
    responses=problem_responses(404),  # before the first snapshot is published
)
async def catalogue(request: Request, session: SessionDep, access: _can("catalogue")) -> dict:
    policy = _policy(request)
    snapshot = await service.latest_snapshot(session)
    released = policy.released(snapshot.as_of)
    audit.record(
        session,
        request,
        action="stats.catalogue",
        resource_type="stats_snapshot",
        resource_ids=[snapshot.id],
    )
    return {
        "snapshot": {"id": str(snapshot.id), "as_of": snapshot.as_of.isoformat()},
        "threshold": policy.threshold,
        "rounding_base": policy.rounding_base,
        "measures": {
            name: {
                "dimensions": {
                    d: list(policy.dimensions[d].categories) for d in measure.dimensions
                },
                "tables": [
                    {"geography": t.geography, "period": t.period, "breakdown": list(t.dimensions)}
                    for t in policy.tables(name)
                ],
            }
            for name, measure in policy.measures.items()
        },
        "released_periods": released,
        "scope": "own municipality" if await service.own_area(session, access) else "all",
    }


def _build_url(build_id: uuid.UUID) -> str:
    return f"{API_PREFIX}/stats/snapshot-builds/{build_id}"


@router.post(
    "/snapshot-builds",
    response_model=SnapshotBuildOut,
    status_code=202,
    summary="Start building a snapshot of the released periods, or join the build running",
    description="Answered at once: the server freezes the released periods, protects the "
    "whole family and publishes it, and keeps the build's progress and result at the "
    "`Location` given. One build runs at a time; asking while one runs answers that one "
    "(409 if it builds as of another date).",
    responses=problem_responses(409),
)
async def start_build(
    request: Request,
    response: Response,
    background: BackgroundTasks,
    session: SessionDep,
    access: _can("snapshot"),
    as_of: date | None = None,
) -> Any:
    as_of = as_of or date.today()
    try:
        refuse_future(as_of)
    except FutureRelease as exc:
        raise invalid_field(
            "as_of", "may not be in the future", where="query", kind="future_date"
        ) from exc
    build, started = await builds.claim(session, access.actor.user_id, as_of)
    if started:  # after the commit, so the build's row is there for it to finish
        background.add_task(request.app.state.builder.start, build.id, as_of, build.requested_by)
    response.headers["Location"] = _build_url(build.id)
    audit.record(
        session,
        request,
        action="stats.snapshot",
        resource_type="stats_snapshot_build",
        resource_ids=[build.id],
        purpose="started" if started else "joined",
        fields=["as_of"],
    )
    return builds.view_of(build)


@router.get(
    "/snapshot-builds",
    response_model=list[SnapshotBuildOut],
    summary="The latest builds of snapshots, newest first",
)
async def list_builds(
    request: Request,
    session: SessionDep,
    access: _can("snapshot"),
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
) -> Any:
    found = await builds.latest(session, limit)
    audit.record(
        session,
        request,
        action="stats.snapshot_builds",
        resource_type="stats_snapshot_build",
        resource_ids=[build.id for build in found],
    )
    return found


@router.get(
    "/snapshot-builds/{build_id}",
    response_model=SnapshotBuildOut,
    summary="One build of a snapshot: running, or what it published",
)
async def read_build(
    request: Request, session: SessionDep, build_id: uuid.UUID, access: _can("snapshot")
) -> Any:
    build = await builds.read(session, build_id)
    audit.record(
        session,
        request,
        action="stats.snapshot_build",
        resource_type="stats_snapshot_build",
        resource_ids=[build.id],
        purpose=build.status,
    )
    return build


@router.get("/{measure}", summary="A published table slice (Accept: text/csv for CSV)")
@answered_first(lean_query.answer)
async def query(
    request: Request,
    session: SessionDep,
    measure: str,
    access: _can("query"),
    period: Annotated[str, Query(max_length=7, description="YYYY, YYYY-Qn or YYYY-MM")],
    geography: Annotated[str, Query(pattern="^(municipality|region|national)$")] = "national",
    breakdown: Annotated[str, Query(max_length=64, description="0-2 dimensions, comma")] = "",
    area: Annotated[str | None, Query(max_length=64, description="one area's cells")] = None,
) -> Any:
    unexpected = set(request.query_params) - service.QUERY_KEYS
    if unexpected:
        raise BadRequest(
            f"Unknown parameters {sorted(unexpected)}; the allowed ones are "
            f"{sorted(service.QUERY_KEYS)}. There are no free filters."
        )
    dims = tuple(d for d in breakdown.split(",") if d)
    asked = service.Query(measure, period, geography, dims, area)
    policy = _policy(request)
    snapshot, table, cells = await service.answer(session, access, policy, asked)
    suppressed = sum(c.value is None for c in cells)
    fields = (
        f"measure={measure}",
        f"period={period}",
        f"geography={geography}",
        f"breakdown={'+'.join(table.dimensions)}",
        f"area={area or '*'}",
    )
    purpose = f"cells={len(cells)};suppressed={suppressed}"
    audit.record(
        session,
        request,
        action=lean_query.ACTION,
        resource_type=lean_query.RESOURCE_TYPE,
        resource_ids=[snapshot.id],
        fields=fields,
        purpose=purpose,
    )
    rows = [
        {
            "area": c.area,
            "categories": dict(zip(table.dimensions, c.categories, strict=True)),
            "value": c.value,
            "suppressed": c.value is None,
        }
        for c in cells
    ]
    if lean_query.wants_csv(request):
        return _csv(measure, period, geography, table.dimensions, rows)
    answer = {
        "measure": measure,
        "period": period,
        "geography": geography,
        "breakdown": list(table.dimensions),
        "snapshot_id": str(snapshot.id),
        "as_of": snapshot.as_of.isoformat(),
        "threshold": policy.threshold,
        "rounding_base": policy.rounding_base,
        "cells": rows,
    }
    # Plain JSON values already: FastAPI's jsonable_encoder would walk every cell again
    # before encoding it.
    body = orjson.dumps(answer)
    lean: lean_query.LeanStatsQuery | None = request.app.state.lean_stats_query
    if lean is not None and not service.limited_to_own_area(access):
        # the same query, asked again, is answered from the same snapshot (ADR 0029)
        lean.remember(request, lean_query.PublishedAnswer(snapshot.id, body, fields, purpose))
    return Response(body, media_type=lean_query.JSON)


def _csv(measure, period, geography, dimensions, rows) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["measure", "period", "geography", "area", *dimensions, "value", "suppressed"])
    for row in rows:
        writer.writerow(
            [
                measure,
                period,
                geography,
                row["area"],
                *(row["categories"][d] for d in dimensions),
                "" if row["value"] is None else row["value"],
                str(row["suppressed"]).lower(),
            ]
        )
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
