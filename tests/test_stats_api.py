"""Statistics over HTTP: who may ask what, the family and nothing else, the same value for
every role, audited queries, immutable snapshots, and never a case record."""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import func, select

from referral.models import (
    AuditEvent,
    CaseFile,
    Municipality,
    StatsCell,
    StatsSnapshot,
    StatsSnapshotBuild,
    User,
)
from referral.models.enums import Agency, Role
from tests.case_world import make_town
from tests.databases import postgres_server_url
from tests.helpers import BUILDS_URL, built, cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
AS_OF = date.today()


@pytest.fixture(scope="module")
async def stats_world(app):
    """Two towns in one region with a few hundred synthetic past cases, and a snapshot."""
    import httpx

    from referral.demo.cases import seed_demo_cases
    from tests.conftest import World

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        world = World(app)
        towns = [await make_town(client, world), await make_town(client, world)]
        async with app.state.sessionmaker() as s, s.begin():
            for n, town in enumerate(towns):
                users = (
                    await s.exec(
                        select(User).where(User.id.in_([town.referrer.id, town.coordinator.id]))
                    )
                ).all()
                referrer = next(u for u in users if u.id == town.referrer.id)
                coordinator = next(u for u in users if u.id == town.coordinator.id)
                await seed_demo_cases(
                    s,
                    app.state.case_keys,
                    town.municipality_id,
                    [referrer],
                    coordinator,
                    120 + 60 * n,
                    random.Random(n),
                )
        _, national_headers = await _national(client, world)
        build = await built(client, national_headers, as_of=AS_OF.isoformat())
        assert build["status"] == "published", build
        async with app.state.sessionmaker() as s:
            codes = {
                t.municipality_id: (
                    await s.exec(
                        select(Municipality.code).where(Municipality.id == t.municipality_id)
                    )
                ).one()
                for t in towns
            }
        yield {
            "towns": towns,
            "national": national_headers,
            "snapshot": build["snapshot"],
            "codes": codes,
        }


async def _national(client, world):
    from tests.conftest import bearer, login

    account = await world.account(Role.national_analyst, agency=Agency.municipality)
    return account, bearer(await login(client, account))


def _year() -> str:
    return str(AS_OF.year - 1)


async def test_snapshot_publishes_no_small_and_only_rounded_values(app, stats_world):
    async with app.state.sessionmaker() as s:
        values = (
            await s.exec(
                select(StatsCell.value).where(
                    StatsCell.snapshot_id == uuid.UUID(stats_world["snapshot"]["id"])
                )
            )
        ).all()
    published = [v for v in values if v is not None]
    assert published
    assert any(v >= 10 for v in published)
    assert all(v == 0 or v >= 10 for v in published)
    assert all(v % 5 == 0 for v in published)
    assert stats_world["snapshot"]["suppressed"] == sum(v is None for v in values)


async def test_the_national_yearly_referrals_are_the_distinct_people_of_each_month(
    app, stats_world
):
    """Counted here from the cases themselves: one per person and month referred."""
    year = int(_year())
    async with app.state.sessionmaker() as s:
        referred = (
            await s.exec(
                select(CaseFile.stat_person, CaseFile.submitted_at).where(
                    CaseFile.submitted_at.is_not(None)
                )
            )
        ).all()
        published = (
            await s.exec(
                select(StatsCell.value).where(
                    StatsCell.snapshot_id == uuid.UUID(stats_world["snapshot"]["id"]),
                    StatsCell.measure == "referrals",
                    StatsCell.table_key == "national/year/",
                    StatsCell.period == str(year),
                )
            )
        ).one()
    people_months = {(p, at.month) for p, at in referred if at.year == year}
    assert len(people_months) >= 10
    assert published == (len(people_months) + 2) // 5 * 5


# SQLite has no TRUNCATE (an unqualified DELETE is its form of it)
CHANGES = [
    "UPDATE stats_cell SET value = 1000 WHERE value IS NOT NULL",
    "UPDATE stats_snapshot SET as_of = '2000-01-01'",
    "DELETE FROM stats_cell",
    "DELETE FROM stats_snapshot",
]
if postgres_server_url():
    CHANGES += ["TRUNCATE stats_cell CASCADE", "TRUNCATE stats_snapshot CASCADE"]


@pytest.mark.parametrize("statement", CHANGES)
async def test_a_published_snapshot_cannot_be_changed(app, stats_world, statement):
    """A correction is a new snapshot: the published one, which answers quoted earlier came
    from, is refused any change by the database itself."""
    snapshot_id = uuid.UUID(stats_world["snapshot"]["id"])

    async def published() -> list:
        async with app.state.sessionmaker() as s:
            cells = select(StatsCell.id, StatsCell.value).where(
                StatsCell.snapshot_id == snapshot_id
            )
            return sorted((await s.exec(cells)).all())

    before = await published()
    async with app.state.engine.connect() as connection:
        with pytest.raises(DBAPIError) as info:
            await connection.execute(text(statement))
        assert "published statistics are never changed" in str(info.value)
        await connection.rollback()
    assert await published() == before


async def test_analyst_sees_own_municipality_only(client, stats_world):
    town, other = stats_world["towns"]
    own, theirs = (
        stats_world["codes"][town.municipality_id],
        stats_world["codes"][other.municipality_id],
    )
    base = {"period": _year(), "geography": "municipality"}
    mine = await client.get(
        "/api/v1/stats/referrals", params={**base, "area": own}, headers=town.analyst.headers
    )
    assert mine.status_code == 200, mine.text
    assert {c["area"] for c in mine.json()["cells"]} == {own}
    implicit = await client.get(
        "/api/v1/stats/referrals", params=base, headers=town.analyst.headers
    )
    assert implicit.json()["cells"] == mine.json()["cells"]
    for params in (
        {**base, "area": theirs},
        {"period": _year()},
        {"period": _year(), "geography": "region"},
    ):
        refused = await client.get(
            "/api/v1/stats/referrals", params=params, headers=town.analyst.headers
        )
        assert refused.status_code == 403, params


async def test_every_role_sees_the_same_value_for_the_same_cell(client, stats_world):
    town = stats_world["towns"][0]
    code = stats_world["codes"][town.municipality_id]
    params = {"period": _year(), "geography": "municipality", "area": code, "breakdown": "concern"}
    as_analyst = await client.get(
        "/api/v1/stats/referrals", params=params, headers=town.analyst.headers
    )
    as_national = await client.get(
        "/api/v1/stats/referrals", params=params, headers=stats_world["national"]
    )
    assert as_analyst.json()["cells"] == as_national.json()["cells"]


@pytest.mark.parametrize(
    "role", [Role.referrer, Role.coordinator, Role.panel_member, Role.auditor, Role.admin]
)
async def test_no_other_role_reaches_statistics(client, signed_in, stats_world, role):
    _, headers = await signed_in(role)
    for method, path in (
        ("GET", "/api/v1/stats/catalogue"),
        ("GET", f"/api/v1/stats/referrals?period={_year()}"),
        ("POST", BUILDS_URL),
        ("GET", BUILDS_URL),
        ("GET", f"{BUILDS_URL}/{uuid.uuid4()}"),
    ):
        assert (await client.request(method, path, headers=headers)).status_code == 403


async def test_only_the_national_analyst_builds_snapshots(client, stats_world):
    town = stats_world["towns"][0]
    response = await client.post(BUILDS_URL, headers=town.analyst.headers)
    assert response.status_code == 403


@pytest.mark.parametrize("days_ahead", [1, 365 * 2000])
async def test_a_snapshot_as_of_a_future_date_is_refused(app, client, stats_world, days_ahead):
    async def counted() -> list[int]:
        async with app.state.sessionmaker() as s:
            return [
                (await s.exec(select(func.count()).select_from(table))).one()
                for table in (StatsSnapshot, StatsSnapshotBuild)
            ]

    before = await counted()
    as_of = (date.today() + timedelta(days=days_ahead)).isoformat()
    response = await client.post(
        BUILDS_URL, headers=stats_world["national"], params={"as_of": as_of}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "as_of"]
    assert await counted() == before  # no snapshot, and no build started


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (
            {"period": "YEAR", "breakdown": "sector,gender", "geography": "municipality"},
            "not published",
        ),
        ({"period": "YEAR", "breakdown": "religion"}, "not published"),
        ({"period": "YEAR", "since": "2024-01-01"}, "no free filters"),
        ({"period": "YEAR", "gender": "female"}, "no free filters"),
        ({"period": "2024-13"}, "period must be"),
    ],
)
async def test_anything_outside_the_family_is_400_naming_what_is_allowed(
    client, stats_world, params, named
):
    params = {
        k: (v.replace("YEAR", _year()) if isinstance(v, str) else v) for k, v in params.items()
    }
    response = await client.get(
        "/api/v1/stats/referrals", params=params, headers=stats_world["national"]
    )
    assert response.status_code in (400, 422), response.text
    assert named.lower() in response.text.lower()


async def test_unknown_measure_is_404(client, stats_world):
    response = await client.get(
        "/api/v1/stats/religions", params={"period": _year()}, headers=stats_world["national"]
    )
    assert response.status_code == 404


async def test_catalogue_lists_the_family(client, stats_world):
    catalogue = (
        await client.get("/api/v1/stats/catalogue", headers=stats_world["national"])
    ).json()
    assert set(catalogue["measures"]) == {
        "referrals",
        "panel_reviews",
        "cases_adopted",
        "case_outcomes",
    }
    assert _year() in catalogue["released_periods"]["year"]
    assert catalogue["threshold"] == 10


async def test_csv_has_the_same_cells(client, stats_world):
    params = {"period": _year(), "breakdown": "age_band"}
    as_json = await client.get(
        "/api/v1/stats/referrals", params=params, headers=stats_world["national"]
    )
    as_csv = await client.get(
        "/api/v1/stats/referrals",
        params=params,
        headers={**stats_world["national"], "Accept": "text/csv"},
    )
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["age_band"], r["value"]) for r in rows] == [
        (c["categories"]["age_band"], "" if c["value"] is None else str(c["value"]))
        for c in as_json.json()["cells"]
    ]


async def test_a_statistics_response_holds_no_case_record(client, stats_world):
    body = (
        await client.get(
            "/api/v1/stats/case_outcomes",
            params={"period": _year(), "breakdown": "outcome"},
            headers=stats_world["national"],
        )
    ).json()
    assert set(body) == {
        "measure",
        "period",
        "geography",
        "breakdown",
        "snapshot_id",
        "as_of",
        "threshold",
        "rounding_base",
        "cells",
    }
    for cell in body["cells"]:
        assert set(cell) == {"area", "categories", "value", "suppressed"}


async def test_each_query_is_audited_without_counts(client, app, stats_world):
    town = stats_world["towns"][0]
    code = stats_world["codes"][town.municipality_id]
    await client.get(
        "/api/v1/stats/referrals",
        headers=town.analyst.headers,
        params={"period": _year(), "geography": "municipality", "area": code},
    )
    async with app.state.sessionmaker() as s:
        event = (
            await s.exec(
                select(AuditEvent)
                .where(
                    AuditEvent.actor_user_id == town.analyst.id, AuditEvent.action == "stats.query"
                )
                .order_by(AuditEvent.seq.desc())
            )
        ).first()
    assert event.resource_ids == [stats_world["snapshot"]["id"]]
    assert event.purpose.startswith("cells=1;suppressed=")
    assert f"area={code}" in event.fields


async def test_no_single_hidden_municipality_beside_a_published_region(app, stats_world):
    async with app.state.sessionmaker() as s:
        region_of = dict((await s.exec(select(Municipality.code, Municipality.region))).all())
        cells = (
            await s.exec(
                select(StatsCell).where(
                    StatsCell.snapshot_id == uuid.UUID(stats_world["snapshot"]["id"]),
                    StatsCell.measure == "referrals",
                    StatsCell.table_key.in_(["municipality/year/", "region/year/"]),
                )
            )
        ).all()
    regions = {(c.area, c.period): c.value for c in cells if c.table_key == "region/year/"}
    for (region, period), total in regions.items():
        if total is None:
            continue
        hidden = [
            c
            for c in cells
            if c.table_key == "municipality/year/"
            and region_of[c.area] == region
            and c.period == period
            and c.value is None
        ]
        assert len(hidden) != 1, (region, period)


async def test_a_late_record_changes_only_the_next_snapshot(app, client, stats_world):
    first = uuid.UUID(stats_world["snapshot"]["id"])
    async with app.state.sessionmaker() as s:
        before = (
            await s.exec(
                select(func.count()).select_from(StatsCell).where(StatsCell.snapshot_id == first)
            )
        ).one()
    second = await built(client, stats_world["national"], as_of=AS_OF.isoformat())
    assert second["status"] == "published"
    assert second["snapshot"]["id"] != str(first)
    async with app.state.sessionmaker() as s:
        after = (
            await s.exec(
                select(func.count()).select_from(StatsCell).where(StatsCell.snapshot_id == first)
            )
        ).one()
        snapshots = (await s.exec(select(StatsSnapshot.id))).all()
    assert before == after
    assert len(snapshots) >= 2


def test_cli_snapshot(settings, test_db):
    result = run_cli(cli_env(settings, test_db.url), "stats", "snapshot")
    assert result.returncode == 0, result.stderr
    assert "cells" in result.stdout
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    future = run_cli(cli_env(settings, test_db.url), "stats", "snapshot", "--as-of", tomorrow)
    assert future.returncode == 2
    assert "in the future" in future.stderr


def test_the_disclosure_core_imports_no_web_or_database_code():
    probe = (
        "import sys, referral.stats.disclosure; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'starlette', 'sqlalchemy', 'sqlmodel', 'asyncpg', 'aiosqlite') "
        "or m in ('referral.db', 'referral.models')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "[]"


async def test_analysts_get_403_on_every_case_route(client, app, stats_world):
    from tests.routes import api_routes, concrete_path

    town = stats_world["towns"][0]
    for info in api_routes(app):
        if info.path.startswith(
            ("/api/v1/cases", "/api/v1/referrals", "/api/v1/panel-meetings", "/api/v1/worklist")
        ):
            response = await client.request(
                info.method, concrete_path(info), headers=town.analyst.headers, json={}
            )
            assert response.status_code in (403, 404), info.path
            assert "subject" not in response.text
