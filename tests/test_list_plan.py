"""A list page is read from the (scope column, id) index, however a municipality's cases
fall among the ids (ADR 0035).

The data that misleads PostgreSQL: a municipality holding most of the cases, all of them
newer than the other municipalities' (one that joined late, or the bench's pool of fresh
referrals). With the scope as an equality, the planner drops the column from the order as
fixed, assumes the municipality's rows are spread evenly over the ids, and walks the
primary key from the oldest case, filtering out every older case of every other
municipality before it finds the page. With the scope as a range of one value, the page is
the first rows of the composite index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from referral.authz.actor import Actor
from referral.authz.dependencies import Access
from referral.authz.policy import load_access_policy
from referral.cases import repository
from referral.lean import compile_for_driver
from referral.models import CaseFile
from referral.models.enums import Agency, Role
from referral.pagination import PageParams
from tests.case_world import make_town, new_case

POLICY = load_access_policy(Path(__file__).resolve().parent.parent / "policies" / "access.yaml")
OLDER_ELSEWHERE, NEWER_HERE = 12_000, 30_000


@dataclass(frozen=True, slots=True)
class _Unkeyed(Access):
    """The scope as it was written before: an equality, the page ordered by id alone."""

    def scope_key(self) -> Any | None:
        return None


def _copies(template: str, municipality: str, prefix: str, count: int) -> str:
    """`count` copies of case `template` in `municipality`, with ids that all sort before
    (prefix 00000000) or after (ffffffff) every id the application makes."""
    names = [c.name for c in CaseFile.__table__.columns]
    values = {
        "id": f"('{prefix}-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid",
        "municipality_id": f"'{municipality}'::uuid",
    }
    chosen = ", ".join(values.get(name, name) for name in names)
    return (
        f"INSERT INTO case_file ({', '.join(names)}) SELECT {chosen} "
        f"FROM case_file, generate_series(1, {count}) AS g WHERE id = '{template}'"
    )


def _scans(plan: dict) -> list[dict]:
    found = [plan] if plan.get("Relation Name") == "case_file" else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def _page_plan(driver, dialect: Any, access: Access) -> dict:
    """The case_file scan of the list's first page as `access`, as run."""
    statement = repository.list_statement(access, frozenset(), with_cursor=False)
    compiled = compile_for_driver(statement, dialect)
    values = repository.list_values(access, PageParams(limit=50, cursor=None))
    explained = await driver.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled.sql}", *compiled.arguments(values)
    )
    (scan,) = _scans(explained[0]["Plan"])  # the pool's connections parse JSON (db.py)
    return scan


@pytest.mark.postgres_only
async def test_a_late_municipality_s_first_page_reads_its_own_rows_only(app, client, world):
    dialect = app.state.engine.dialect
    town = await make_town(client, world)
    elsewhere = await world.municipality()
    template = await new_case(client, town.referrer)
    await new_case(client, town.referrer)
    account = town.coordinator.account
    coordinator = Actor(
        user_id=account.id,
        username=account.username,
        role=Role.coordinator,
        organisation_id=account.organisation_id,
        agency=Agency.municipality,
        municipality_id=town.municipality_id,
        session_id=account.id,  # not asked: the page's statement alone, without the actor's check
    )
    grant = POLICY.grant(Role.coordinator, "case")
    keyed = Access(coordinator, POLICY, "case", "list", grant)
    assert keyed.scope_key() is CaseFile.municipality_id

    async with app.state.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        transaction = driver.transaction()
        await transaction.start()
        try:  # rolled back: the rows, and the statistics ANALYZE gathers from them
            await driver.execute(_copies(template, str(elsewhere.id), "00000000", OLDER_ELSEWHERE))
            await driver.execute(
                _copies(template, str(town.municipality_id), "ffffffff", NEWER_HERE)
            )
            await driver.execute("ANALYZE case_file")
            scan = await _page_plan(driver, dialect, keyed)
            walk = await _page_plan(
                driver, dialect, _Unkeyed(coordinator, POLICY, "case", "list", grant)
            )
        finally:
            await transaction.rollback()

    assert scan["Index Name"] == "ix_case_file_municipality_id_id", scan
    assert scan.get("Rows Removed by Filter", 0) == 0, scan
    assert scan["Actual Rows"] == 51  # the page and one more, to know another follows
    # the data does mislead the equality: it walks the primary key past the older cases
    assert walk["Index Name"] == "pk_case_file", walk
    assert walk["Rows Removed by Filter"] >= OLDER_ELSEWHERE, walk
    assert scan["Shared Hit Blocks"] * 5 < walk["Shared Hit Blocks"], (scan, walk)
