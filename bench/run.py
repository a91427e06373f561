"""`make bench`: seed, serve as in production, load from another process, report.

    make bench                                  # 100k cases, SQLite under var/bench
    make bench ARGS="--cases 1000000"
    make bench ARGS="--cases 1000000 --baseline 10000"   # and 1M against 10k, side by side
    REFERRAL_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres make bench

1. A fresh database, migrated; N synthetic cases with EVENTS_PER_CASE chained audit events
   each (bench/seed.py).
2. In this process: the statistics snapshot build (timed) and the audit chain's
   verification (events per second).
3. `referral serve --workers W` in a process of its own; bench/load.py in another, at C
   concurrent clients, one scenario at a time, the ceiling (/livez: an `async def` route
   returning a constant) first and last. Then a snapshot is built through the API while
   /livez is asked every 20 ms, and the worker's memory is read after it.
4. On PostgreSQL, pgbench at the same concurrency runs the very SQL statements of one
   audited case read, captured from the app: the database's own ceiling for that request.
5. With `--baseline N` (e.g. `--cases 1000000 --baseline 10000`), a second database of N
   cases is seeded and served at once on the next port; each scenario's p50 latency is
   measured on both, in turns, twice: the 1M-against-10k target from one run.
6. bench/results.json gains the run; docs/benchmarks.md is written from all runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess  # nosec B404
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pyotp
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlmodel import select

from bench.report import render
from bench.seed import SUBMITTED_POOL, seed_cases, seed_records
from referral import migrate
from referral.audit import chain
from referral.audit.sealer import SEALER_OPTION
from referral.config import SECRET_FIELDS, Environment, Settings, generate_secret
from referral.db import create_engine, create_sessionmaker
from referral.main import create_app
from referral.models import CaseFile
from referral.stats.policy import load_reporting_policy
from referral.stats.snapshot import build_snapshot
from tests.databases import ScratchDatabase
from tests.helpers import cli_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
SCENARIOS = ("ceiling", "login", "read", "list", "intake", "transition", "stats", "ceiling")
SCALE_SCENARIOS = ("read", "list", "intake", "transition", "stats")
SCALE_ROUNDS = 2
POOL_RATE = 3_000  # transitions a second that the pool must last for; measured: 1,100-2,720
BENCH_DIR = ROOT / "var" / "bench"
WALKS_PATH = "/api/v1/audit/verifications"


def bench_settings(database_url: str) -> Settings:
    return Settings(
        env=Environment.test,
        database_url=database_url,
        **{name: generate_secret(name) for name in SECRET_FIELDS},
    )


async def prepare(settings: Settings, cases: int, pool: int) -> dict:
    engine = create_engine(settings)
    try:
        seeded = await seed_cases(engine, settings, cases, pool=pool)
        sessions = create_sessionmaker(engine)
        policy = load_reporting_policy(ROOT / "policies" / "reporting.yaml")
        started = time.perf_counter()
        async with sessions() as session, session.begin():
            snapshot = await build_snapshot(session, policy, date.today(), None)
        snapshot_seconds = time.perf_counter() - started
        started = time.perf_counter()
        async with sessions() as session:
            verification = await chain.verify(session, settings.audit_chain_keys)
        verify_seconds = time.perf_counter() - started
        if not verification.ok:
            raise SystemExit(f"the seeded audit chain does not verify: {verification}")
        municipality = uuid.UUID(seeded["actors"]["municipality_id"])
        async with sessions() as session:
            in_town = select(CaseFile.id).where(CaseFile.municipality_id == municipality)
            read_ids = (await session.exec(in_town.limit(5000))).all()
            pool = in_town.where(CaseFile.state == "submitted").order_by(CaseFile.id.desc())
            transition_ids = (await session.exec(pool)).all()
        read_records = await seed_records(engine, settings, read_ids)
        return {
            "seeded": seeded,
            "snapshot": {
                "seconds": round(snapshot_seconds, 1),
                "cells": snapshot.cells,
                "suppressed": snapshot.suppressed,
            },
            "verify": {
                "events": verification.checked,
                "seconds": round(verify_seconds, 2),
                "events_per_second": round(verification.checked / verify_seconds),
                "rechecked": verification.rechecked,
            },
            "read_ids": [str(i) for i in read_ids],
            "read_records": read_records,
            "transition_ids": [str(i) for i in transition_ids],
        }
    finally:
        await engine.dispose()


def start_server(settings: Settings, workers: int, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "referral.cli", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--no-access-log"]
    with log.open("w") as out:
        process = subprocess.Popen(  # noqa: S603  # nosec B603
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(settings, settings.database_url),
            cwd=ROOT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server did not become ready:\n{log.read_text()}")


def sign_in(base: str, actors: dict) -> dict[str, str]:
    tokens = {}
    for role in ("referrer", "coordinator", "national_analyst", "auditor"):
        form = {"username": actors[role], "password": actors["password"]}
        if f"{role}_totp" in actors:
            form["totp_code"] = pyotp.TOTP(actors[f"{role}_totp"]).now()
        response = httpx.post(f"{base}/api/v1/auth/token", data=form, timeout=30)
        response.raise_for_status()
        tokens[role] = response.json()["access_token"]
    return tokens


def stats_path() -> str:
    return f"/api/v1/stats/referrals?period={date.today().year - 1}&breakdown=concern"


def referral_body() -> dict:
    return {
        "subject": {
            "given_name": "Ngarkesë",
            "family_name": "Sintetike",
            "date_of_birth": "2009-03-14",
            "gender": "male",
            "guardian": {"name": "Kujdestar Sintetik", "relationship": "parent"},
            "languages": ["sq"],
        },
        "primary_concern": "far_right",
        "description": "[BENCH] synthetic referral made by the load driver.",
        "indicators": ["online_radicalisation"],
        "urgency": "routine",
    }


def make_plan(tokens: dict, seeded: dict, prepared: dict, transition_ids: list[str]) -> dict:
    actors = seeded["actors"]
    return {
        "tokens": tokens,
        "read_ids": prepared["read_ids"],
        "transition_ids": transition_ids,
        "stats_path": stats_path(),
        "referral": referral_body(),
        "login_form": f"username={actors['referrer']}&password={actors['password']}",
    }


def write_plan(name: str, plan: dict) -> Path:
    plan_file = BENCH_DIR / f"{name}.json"
    plan_file.write_text(json.dumps(plan))
    return plan_file


def split(items: list, weights: list[float], most: int = 20_000) -> list[list]:
    """`items` in contiguous shares, in proportion to `weights` (each run's seconds) and of
    at most `most` each: a transition moves each case once, so runs must not share."""
    total = sum(weights)
    shares, start = [], 0
    for weight in weights:
        size = min(int(len(items) * weight / total), most)
        shares.append(items[start : start + size])
        start += size
    return shares


def transition_pool(seconds: float) -> int:
    """Fresh referrals enough for `seconds` of transitions (warm-ups included) at
    POOL_RATE each second: a transition moves a case once, and a run that uses up its
    cases stops early (the report says so)."""
    return max(SUBMITTED_POOL, int(POOL_RATE * seconds))


def scale_seconds(args: argparse.Namespace) -> float:
    """A scale round's time: half the main run's, so that the rounds do not run out of
    cases to move."""
    return max(args.seconds / 2, 3)


def compare_scales(servers: dict[str, tuple[str, list[dict]]], args: argparse.Namespace) -> dict:
    """p50 latency of each scenario at both sizes, from two servers serving at once and
    driven in turns, SCALE_ROUNDS times, the order reversed each round: two runs minutes
    apart measured the machine's drift as well as the data's size (ADR 0011)."""
    short = argparse.Namespace(**{**vars(args), "seconds": scale_seconds(args)})
    p50: dict[str, dict[str, list[float]]] = {
        name: {label: [] for label in servers} for name in SCALE_SCENARIOS
    }
    for round_ in range(SCALE_ROUNDS):
        order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
        for name in SCALE_SCENARIOS:
            for label in order:
                base, plans = servers[label]
                plan_file = write_plan(f"plan-{label}-{round_}", plans[round_])
                outcome = drive(base, plan_file, name, short)
                print(json.dumps({"scale": label, "round": round_} | outcome), flush=True)
                p50[name][label].append(outcome["p50_ms"])
    scenarios = {
        name: {
            "small_p50_ms": runs["small"],
            "large_p50_ms": runs["large"],
            "ratio": round(sum(runs["large"]) / sum(runs["small"]), 3),
        }
        for name, runs in p50.items()
    }
    return {"rounds": SCALE_ROUNDS, "seconds": short.seconds, "scenarios": scenarios}


def against_ceiling(scenarios: list[dict]) -> dict:
    """The ceiling (the mean of its runs) and every other scenario with its throughput and
    latencies as ratios to the ceiling's: throughput a share of it, latency a multiple."""
    runs = [s for s in scenarios if s["scenario"] == "ceiling"]
    ceiling = {k: sum(r[k] for r in runs) / len(runs) for k in ("throughput_rps", *_LATENCIES)}
    measured = [
        s
        | {
            "ratio_to_ceiling": {
                "throughput": round(s["throughput_rps"] / ceiling["throughput_rps"], 4),
                **{k[:3]: round(s[k] / ceiling[k], 1) for k in _LATENCIES},
            }
        }
        for s in scenarios
        if s["scenario"] != "ceiling"
    ]
    return {
        "ceiling_rps": round(ceiling["throughput_rps"], 1),
        "scenarios": measured,
        "ceiling_runs": runs,
    }


_LATENCIES = ("p50_ms", "p95_ms", "p99_ms")


def drive(base: str, plan_file: Path, scenario: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "bench.load", "--url", base, "--plan", str(plan_file)]
    command += ["--scenario", scenario, "--clients", str(args.clients)]
    command += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    done = subprocess.run(  # noqa: S603  # nosec B603
        command, capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def served_snapshot(base: str, token: str) -> dict:
    """A snapshot built through the API, as the national analyst builds one (ADR 0026)."""
    build, timing = served_job(base, token, "/api/v1/stats/snapshot-builds")
    if build["status"] != "published":
        raise RuntimeError(f"the served snapshot build did not publish: {build}")
    return timing | {"cells": build["snapshot"]["cells"]}


def served_walk(base: str, token: str) -> dict:
    """A walk of the whole trail through the API, as an auditor asks for one (ADR 0024)."""
    walk, timing = served_job(base, token, WALKS_PATH)
    if walk["status"] != "ok":
        raise RuntimeError(f"the served walk did not find the trail whole: {walk}")
    return timing | {"checked": walk["checked"]}


def served_job(base: str, token: str, path: str) -> tuple[dict, dict]:
    """Ask for a job the server runs (a build, a walk) and poll it until it ends, while
    another client asks the ceiling route every 20 ms: how soon the request was answered,
    how long the job took, and how long the worker kept everyone else waiting meanwhile."""
    waits: list[float] = []
    running = threading.Event()
    running.set()

    def ping() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while running.is_set():
                started = time.perf_counter()
                client.get("/livez").raise_for_status()
                waits.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)

    pinger = threading.Thread(target=ping)
    pinger.start()
    started = time.perf_counter()
    try:
        job, answered = _until_ended(base, token, path)
    finally:
        seconds = time.perf_counter() - started
        running.clear()
        pinger.join()
    waits.sort()
    return job, {
        "seconds": round(seconds, 1),
        "answered_ms": round(answered * 1000, 1),
        "livez_pings": len(waits),
        "livez_p99_ms": round(waits[int(len(waits) * 0.99)], 1) if waits else None,
        "livez_max_ms": round(waits[-1], 1) if waits else None,
    }


def reads_during_walks(base: str, plan_file: Path, token: str, args, alone: dict) -> dict:
    """The read scenario again, while walks of the whole trail run back to back, each in a
    process of its own (ADR 0027): what a walk costs everyone else's reads. `alone` is the
    read scenario's outcome in the same run, without a walk."""
    walks: list[dict] = []
    failures: list[Exception] = []
    stopping = threading.Event()
    first = threading.Event()

    def walk_after_walk() -> None:
        try:
            while not stopping.is_set():
                walk, _answered = _until_ended(base, token, WALKS_PATH, asked=first.set)
                walks.append(walk)
        except Exception as exc:  # reported below, not lost with the thread
            failures.append(exc)
            first.set()

    walker = threading.Thread(target=walk_after_walk)
    walker.start()
    try:
        if not first.wait(60):
            raise RuntimeError("the first walk during the reads was not answered")
        during = drive(base, plan_file, "read", args) if not failures else None
    finally:
        stopping.set()
        walker.join()
    if failures or during is None:  # reads without a walk would be reported as with one
        raise RuntimeError(f"the walks during the reads failed: {failures}")
    if any(walk["status"] != "ok" for walk in walks):
        raise RuntimeError(f"a walk during the reads did not find the trail whole: {walks}")
    return during | {
        "walks": len(walks),
        "alone_rps": alone["throughput_rps"],
        "share_of_alone": round(during["throughput_rps"] / alone["throughput_rps"], 3),
    }


def _until_ended(
    base: str, token: str, path: str, asked: Callable[[], None] = lambda: None
) -> tuple[dict, float]:
    """(the ended job, seconds until the request that asked for it was answered)"""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        answer = client.post(path)
        answered = time.perf_counter() - started
        answer.raise_for_status()
        asked()
        job = answer.json()
        while job["status"] == "running":
            time.sleep(0.25)
            polled = client.get(answer.headers["location"])
            polled.raise_for_status()
            job = polled.json()
    return job, answered


def memory_mib(pid: int) -> dict[str, float]:
    """Peak and current resident memory of the serving process(es): the master and workers."""
    pids = [pid, *_children(pid)]
    found: dict[str, float] = {"peak_rss_mib": 0.0, "rss_mib": 0.0}
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text()
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        found["peak_rss_mib"] = round(max(found["peak_rss_mib"], hwm), 1)
        found["rss_mib"] = round(max(found["rss_mib"], rss), 1)
    return found


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


# --- pgbench: the same SQL as one audited read ------------------------------------------


def captured_read_sql(settings: Settings, token: str, case_id: str) -> list[tuple[str, tuple]]:
    """The statements one audited case read sends, with their parameters, from the app."""

    async def capture() -> list[tuple[str, tuple]]:
        app = create_app(settings)
        seen: list[tuple[str, tuple]] = []

        def record(_conn, _cursor, statement, parameters, context, _many) -> None:
            # the sealer's round is shared by all requests waiting at the time (ADR 0014)
            if not context.execution_options.get(SEALER_OPTION):
                seen.append((statement, tuple(parameters or ())))

        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                headers = {"Authorization": f"Bearer {token}"}
                # the first read makes the actor known to the app; the second is as served
                (await client.get(f"/api/v1/cases/{case_id}", headers=headers)).raise_for_status()
                event.listen(app.state.engine.sync_engine, "before_cursor_execute", record)
                lean = app.state.lean_statements
                if lean is not None:  # its one statement, on the driver (ADR 0028)
                    lean.observers.append(lambda sql, arguments: seen.append((sql, arguments)))
                response = await client.get(f"/api/v1/cases/{case_id}", headers=headers)
                response.raise_for_status()
        finally:
            await app.state.engine.dispose()
        return [s for s in seen if not s[0].lstrip().upper().startswith("SELECT 1")]

    return asyncio.run(capture())


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, list | tuple):
        return "ARRAY[" + ",".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def pgbench_script(statements: list[tuple[str, tuple]]) -> str:
    """One audited read, its parameters inlined: its statements in a transaction, or its
    one statement alone (the lean read, ADR 0028, sends one in autocommit).

    The sealer's round that chains its event is left out: one round serves every request
    waiting at the time, on a connection of its own (ADR 0014)."""
    lines = []
    for statement, params in statements:
        sql = " ".join(statement.split())
        values = [_literal(v) for v in params]
        lines.append(re.sub(r"\$(\d+)", lambda m, v=values: v[int(m.group(1)) - 1], sql) + ";")
    if len(lines) > 1:
        lines = ["BEGIN;", *lines, "COMMIT;"]
    return "\n".join(lines) + "\n"


def run_pgbench(database_url: str, script: str, clients: int, seconds: float) -> dict:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return {"skipped": "pgbench is not installed"}
    url = make_url(database_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    command = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", "2"]
    command += ["-T", str(int(seconds)), "-f", handle.name, "-r"]
    command += ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    command += ["-U", url.username or "postgres", url.database or "postgres"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  # nosec B603
    Path(handle.name).unlink()
    tps = re.search(r"tps = ([\d.]+)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if done.returncode != 0 or tps is None:
        return {"error": (done.stderr or done.stdout)[-2000:]}
    return {
        "statements": sum(
            1 for line in script.splitlines() if line not in ("BEGIN;", "COMMIT;", "")
        ),
        "tps": round(float(tps.group(1)), 1),
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "clients": clients,
    }


# --- the run ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--baseline",
        type=int,
        default=None,
        help="also seed this many cases, serve both sizes, and compare their latency "
        "scenario by scenario, in turns (e.g. --cases 1000000 --baseline 10000)",
    )
    args = parser.parse_args()

    os.environ.pop("REFERRAL_TEST_DATABASE_URL", None)
    server_url = os.environ.get("REFERRAL_BENCH_DATABASE_URL")
    if server_url:
        os.environ["REFERRAL_TEST_DATABASE_URL"] = server_url
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    database = ScratchDatabase.create(BENCH_DIR, f"bench{args.cases}")
    given = {"--cases": args.cases if args.cases != 100_000 else None, "--baseline": args.baseline}
    bench_args = " ".join(f"{flag} {value}" for flag, value in given.items() if value)
    result: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{_memory_gib()} GiB, Python {platform.python_version()}",
        "database": "postgresql" if database.is_postgres else "sqlite",
        "cases": args.cases,
        "workers": args.workers,
        "clients": args.clients,
        "seconds_per_scenario": args.seconds,
        "commit": _commit(),
        "served_code": _served_code(),
        "command": "make bench"
        + (f" ARGS='{bench_args}'" if bench_args else "")
        + (" REFERRAL_BENCH_DATABASE_URL=postgresql://…" if server_url else ""),
    }
    process = small_process = baseline = None
    try:
        migrate.upgrade(database.url)
        settings = bench_settings(database.url)
        # the main run takes the first share of the transition pool, each scale round another
        rounds = [args.warmup + scale_seconds(args)] * (SCALE_ROUNDS if args.baseline else 0)
        main_seconds = args.warmup + args.seconds
        pool = transition_pool(main_seconds + sum(rounds))
        print(f"seeding {args.cases:,} cases into {result['database']} …", flush=True)
        prepared = asyncio.run(prepare(settings, args.cases, pool))
        seeded = prepared["seeded"]
        result.update(
            transition_pool=seeded["transition_pool"],
            read_cases=len(prepared["read_ids"]),
            read_records=prepared["read_records"],
            seed_seconds=seeded["seconds"],
            audit_events=seeded["audit_events"],
            snapshot=prepared["snapshot"],
            verify=prepared["verify"],
        )
        print(
            f"seeded in {seeded['seconds']} s; snapshot {prepared['snapshot']['seconds']} s; "
            f"verify {prepared['verify']['events_per_second']:,} events/s",
            flush=True,
        )

        if args.baseline:
            baseline = ScratchDatabase.create(BENCH_DIR, f"bench{args.baseline}")
            migrate.upgrade(baseline.url)
            baseline_settings = bench_settings(baseline.url)
            print(f"seeding the {args.baseline:,}-case baseline …", flush=True)
            baseline_prepared = asyncio.run(
                prepare(baseline_settings, args.baseline, transition_pool(sum(rounds)))
            )

        base = f"http://127.0.0.1:{args.port}"
        process = start_server(settings, args.workers, args.port, BENCH_DIR / "server.log")
        tokens = sign_in(base, seeded["actors"])
        shares = split(prepared["transition_ids"], [main_seconds, *rounds])
        plan = make_plan(tokens, seeded, prepared, shares[0])
        plan_file = write_plan("plan", plan)
        scenarios = []
        for name in SCENARIOS:
            outcome = drive(base, plan_file, name, args)
            print(json.dumps(outcome), flush=True)
            scenarios.append(outcome)
        result["served_snapshot"] = served_snapshot(base, tokens["national_analyst"])
        print(json.dumps(result["served_snapshot"]), flush=True)
        result["served_walk"] = served_walk(base, tokens["auditor"])
        print(json.dumps(result["served_walk"]), flush=True)
        read_alone = next(s for s in scenarios if s["scenario"] == "read")
        result["reads_during_walks"] = reads_during_walks(
            base, plan_file, tokens["auditor"], args, read_alone
        )
        print(json.dumps(result["reads_during_walks"]), flush=True)
        result["server_memory"] = memory_mib(process.pid)  # after the build: it counts
        result.update(against_ceiling(scenarios))
        if args.baseline:
            small_base = f"http://127.0.0.1:{args.port + 1}"
            small_log = BENCH_DIR / "server-baseline.log"
            small_process = start_server(baseline_settings, args.workers, args.port + 1, small_log)
            small_tokens = sign_in(small_base, baseline_prepared["seeded"]["actors"])
            small_pool = split(baseline_prepared["transition_ids"], rounds)
            large_plans = [make_plan(tokens, seeded, prepared, ids) for ids in shares[1:]]
            small_plans = [
                make_plan(small_tokens, baseline_prepared["seeded"], baseline_prepared, ids)
                for ids in small_pool
            ]
            result["scale"] = compare_scales(
                {"small": (small_base, small_plans), "large": (base, large_plans)}, args
            ) | {"baseline_cases": args.baseline}
        if database.is_postgres:
            statements = captured_read_sql(settings, tokens["coordinator"], plan["read_ids"][0])
            script = pgbench_script(statements)
            (BENCH_DIR / "audited-read.sql").write_text(script)
            result["pgbench_audited_read"] = run_pgbench(
                database.url, script, args.clients, args.seconds
            ) | {"audit": "held"}  # the event is the sealer round's to write (ADR 0031)
            print(json.dumps(result["pgbench_audited_read"]), flush=True)
    finally:
        for running in (process, small_process):
            if running is not None:
                running.terminate()
                running.wait(timeout=60)
        for scratch in (database, baseline):
            if scratch is None:
                continue
            scratch.drop()
            if not scratch.is_postgres:
                for suffix in ("", "-wal", "-shm"):
                    Path(scratch.url.split("///", 1)[1] + suffix).unlink(missing_ok=True)

    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    history.append(result)
    RESULTS.write_text(json.dumps(history, indent=2) + "\n")
    (ROOT / "docs" / "benchmarks.md").write_text(render(history))
    print(f"wrote {RESULTS.relative_to(ROOT)} and docs/benchmarks.md")


def _commit() -> str:
    """The code measured: the commit, marked when the work tree differs from it."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    run = lambda *a: subprocess.run([git, *a], capture_output=True, text=True, cwd=ROOT)  # noqa: E731, S603  # nosec B603
    head = run("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
    # the results of earlier runs are not the code being measured
    changed = run(
        "status", "--porcelain", "--", ".", ":!bench/results.json", ":!docs/benchmarks.md"
    )
    return head + ("+changes" if changed.stdout.strip() else "")


# What serves the scenarios; a commit that changes none of it measures the same code.
SERVED_PATHS = ("referral", "policies", "migrations", "pyproject.toml")


def _served_code() -> str | None:
    """The git trees of what serves the scenarios, as one name; None when unknown or when
    the work tree differs from them."""
    git = shutil.which("git")
    if git is None:
        return None
    run = lambda *a: subprocess.run([git, *a], capture_output=True, text=True, cwd=ROOT)  # noqa: E731, S603  # nosec B603
    if run("status", "--porcelain", "--", *SERVED_PATHS).stdout.strip():
        return None
    trees = run("rev-parse", *(f"HEAD:{path}" for path in SERVED_PATHS)).stdout.split()
    if len(trees) != len(SERVED_PATHS):
        return None
    return hashlib.sha256(" ".join(trees).encode()).hexdigest()[:12]


def _memory_gib() -> int:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


if __name__ == "__main__":
    main()
