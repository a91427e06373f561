"""Benchmark: time to build a statistics snapshot for N cases (default 10k; --cases 1000000).

Seeds a fresh database (SQLite under var/bench/ by default; PostgreSQL with
REFERRAL_BENCH_DATABASE_URL), migrates it, then times `build_snapshot` as the CLI runs it,
and appends the figures to bench/results.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import time
from datetime import UTC, date, datetime
from pathlib import Path

from referral import migrate
from referral.config import Environment, Settings, generate_secret
from referral.db import create_engine, create_sessionmaker
from referral.stats.policy import load_reporting_policy
from referral.stats.snapshot import build_snapshot
from tests.databases import ScratchDatabase

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"


async def run(database_url: str, cases: int) -> dict:
    from bench.seed import seed_cases

    settings = Settings(
        env=Environment.test,
        database_url=database_url,
        **{
            name: generate_secret(name)
            for name in ("jwt_secret", "data_keys", "blind_index_key", "audit_key")
        },
    )
    engine = create_engine(settings)
    try:
        seeded = await seed_cases(engine, settings, cases)
        policy = load_reporting_policy(ROOT / "policies" / "reporting.yaml")
        started = time.perf_counter()
        async with create_sessionmaker(engine)() as session, session.begin():
            snapshot = await build_snapshot(session, policy, date.today(), None)
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "scenario": "snapshot build",
            "cases": cases,
            "database": "postgresql" if database_url.startswith("postgresql") else "sqlite",
            "seed_seconds": seeded["seconds"],
            "snapshot_seconds": round(elapsed, 1),
            "process_peak_rss_mib": round(peak),
            "cells": snapshot.cells,
            "suppressed": snapshot.suppressed,
        }
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.pop("REFERRAL_TEST_DATABASE_URL", None)
    server = os.environ.get("REFERRAL_BENCH_DATABASE_URL")
    if server:
        os.environ["REFERRAL_TEST_DATABASE_URL"] = server
    database = ScratchDatabase.create(ROOT / "var", f"bench{args.cases}")
    try:
        migrate.upgrade(database.url)
        result = asyncio.run(run(database.url, args.cases))
    finally:
        database.drop()
        if not database.is_postgres:
            Path(database.url.split("///", 1)[1]).unlink(missing_ok=True)
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["command"] = f"make bench ARGS='--cases {args.cases}'" + (
        " REFERRAL_BENCH_DATABASE_URL=..." if server else ""
    )
    print(json.dumps(result, indent=2))
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    history.append(result)
    RESULTS.write_text(json.dumps(history, indent=2) + "\n")
    render(history)


def render(history: list[dict]) -> None:
    """docs/benchmarks.md from bench/results.json: every figure comes from a recorded run."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` from `bench/results.json`; every row is a recorded run.",
        "",
        "## Statistics snapshot build",
        "",
        "Seeds N synthetic cases into a fresh database (38 municipalities, two years of",
        "referrals in every state, 5 % re-referrals, identity fields really encrypted), then",
        "times `build_snapshot` as `referral stats snapshot` runs it: reading the released",
        "periods, protecting every measure-year family (suppression, the linear-span gate,",
        "rounding) and storing the cells.",
        "",
        "| cases | database | snapshot (s) | seeding (s) | peak RSS (MiB) | cells | "
        "suppressed | machine | when | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in history:
        lines.append(
            f"| {r['cases']:,} | {r['database']} | {r['snapshot_seconds']} | "
            f"{r['seed_seconds']} | {r['process_peak_rss_mib']} | {r['cells']:,} | "
            f"{r['suppressed']:,} | {r['machine']} | {r['when']} | `{r['command']}` |"
        )
    lines += [
        "",
        "## Not yet measured",
        "",
        "The load scenarios of issue 7 (login, audited case read, case list, intake,",
        "transition, statistics query, audit verification speed, as ratios to the",
        "framework's ceiling, with pgbench's ceiling beside them) are not built yet.",
        "",
    ]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
