"""docs/benchmarks.md from bench/results.json: every figure comes from a recorded run."""

from __future__ import annotations

# Issue 7's targets (PostgreSQL, one worker, 32 clients): share of the ceiling's throughput.
RATIO_TARGETS = {"read": 0.20, "list": 0.10, "intake": 0.08, "transition": 0.08, "stats": 0.40}
P99_LIMIT_MS = 100
VERIFY_TARGET = 100_000
MEMORY_LIMIT_MIB = 250
SCALE_LIMIT = 1.3
LABELS = {
    "login": "login (argon2id)",
    "read": "audited case read",
    "list": "case list, page of 50",
    "intake": "referral intake",
    "transition": "transition",
    "stats": "statistics query",
}


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _run_section(run: dict) -> list[str]:
    ceiling = run["ceiling_rps"]
    lines = [
        f"### {run['cases']:,} cases, {run['database']}, {run['workers']} worker(s), "
        f"{run['clients']} clients — {run['when']}",
        "",
        f"Machine: {run['machine']}. Code: {run.get('commit', 'before commits were recorded')}. "
        f"Command: `{run['command']}`. "
        f"{run['seconds_per_scenario']:g} s per scenario after a warm-up.",
        "",
        f"Ceiling (`GET /livez`, an `async def` returning a constant, same server): "
        f"**{ceiling:,.0f} req/s** (runs: "
        + ", ".join(f"{c['throughput_rps']:,.0f}" for c in run["ceiling_runs"])
        + f"; p99 {max(c['p99_ms'] for c in run['ceiling_runs'])} ms).",
        "",
        "| scenario | req/s | ratio to ceiling | target | p50 ms | p95 ms | p99 ms | "
        "latency over the ceiling's, p50 / p95 / p99 | p99 < 100 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = run["ceiling_runs"]
    base = {k: sum(c[k] for c in runs) / len(runs) for k in ("p50_ms", "p95_ms", "p99_ms")}
    for s in run["scenarios"]:
        ratio = s["throughput_rps"] / ceiling if ceiling else 0
        target = RATIO_TARGETS.get(s["scenario"])
        target_cell = f"≥ {target:.0%}: {_mark(ratio >= target)}" if target else "—"
        p99_cell = "exempt" if s["scenario"] == "login" else _mark(s["p99_ms"] < P99_LIMIT_MS)
        errors = _errors(s["errors"]) or "none"
        multiples = " / ".join(f"{s[k] / base[k]:.0f}" if base[k] else "—" for k in base)
        lines.append(
            f"| {LABELS.get(s['scenario'], s['scenario'])} | {s['throughput_rps']:,.1f} | "
            f"{ratio:.1%} | {target_cell} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | "
            f"{multiples} | {p99_cell} | {errors} |"
        )
    verify = run["verify"]
    memory = run["server_memory"]
    lines += [
        "",
        f"- Audit verification: {verify['events']:,} events in {verify['seconds']} s = "
        f"**{verify['events_per_second']:,} events/s** (target ≥ {VERIFY_TARGET:,}: "
        f"{_mark(verify['events_per_second'] >= VERIFY_TARGET)})" + _verify_how(verify) + ".",
        f"- Snapshot build: **{run['snapshot']['seconds']} s** "
        f"({run['snapshot']['cells']:,} cells, {run['snapshot']['suppressed']:,} suppressed).",
        *_served_snapshot(run),
        *_served_walk(run),
        *_reads_during_walks(run),
        f"- Server worker memory after the run: peak {memory['peak_rss_mib']} MiB, now "
        f"{memory['rss_mib']} MiB (target < {MEMORY_LIMIT_MIB} MiB: "
        f"{_mark(memory['peak_rss_mib'] < MEMORY_LIMIT_MIB)}).",
        f"- Seeding: {run['seed_seconds']} s for {run['cases']:,} cases and "
        f"{run['audit_events']:,} chained audit events"
        + (
            f", and {run['transition_pool']:,} fresh referrals for the transitions to move."
            if "transition_pool" in run
            else "."
        )
        + (
            f" The {run['read_cases']:,} cases the read scenario reads carry "
            f"{run['read_records']:,} records (notes, screenings, assessments), each decrypted "
            "by every read."
            if "read_records" in run
            else " The cases read carry no records (notes, screenings, assessments)."
        ),
        *_short_runs(run),
    ]
    pgbench = run.get("pgbench_audited_read")
    if pgbench and "tps" in pgbench:
        read = next(s for s in run["scenarios"] if s["scenario"] == "read")
        one = pgbench["statements"] == 1  # the lean read's, in autocommit (ADR 0028)
        lines.append(
            f"- Database ceiling (pgbench, {pgbench['clients']} clients): the "
            + ("one statement" if one else f"{pgbench['statements']} statements")
            + " of one audited read, captured from the app, "
            + _pgbench_audit(pgbench.get("audit"))
            + ("run alone" if one else "as one transaction run")
            + f" at **{pgbench['tps']:,.0f} tps** (average "
            f"{pgbench['latency_avg_ms']} ms). That is {pgbench['tps'] / ceiling:.1%} of the "
            "framework ceiling: no server sending these statements could do better. The app "
            f"reaches {read['throughput_rps'] / pgbench['tps']:.0%} of it."
        )
        unchained = run.get("pgbench_audited_read_unchained") or {}
        if "tps" in unchained:
            lines.append(
                f"- The same reads without the chain head's two statements, the event "
                f"inserted unchained: **{unchained['tps']:,.0f} tps** "
                f"({unchained['tps'] / ceiling:.1%} of the ceiling). The difference is the "
                "cost of serialising every audited request on the head row."
            )
    elif pgbench:
        lines.append(f"- pgbench: not measured ({pgbench})")
    return [*lines, ""]


def _pgbench_audit(audit: str | None) -> str:
    """What of a read's audit the replayed statements leave out."""
    if audit == "staged":
        return (
            "without the sealer's round that chains its event (shared by the requests "
            "waiting at the time), "
        )
    if audit == "held":
        return (
            "which writes nothing: its event is written by the sealer's round, shared by the "
            "requests waiting at the time and left out here (ADR 0031), "
        )
    return ""


def _short_runs(run: dict) -> list[str]:
    """A scenario that stopped before its time: the transitions used up their cases. Its
    figures hold for the time it ran."""
    planned = run["seconds_per_scenario"]
    return [
        f"- **{LABELS.get(s['scenario'], s['scenario'])} ran {s['seconds']:g} s of "
        f"{planned:g}**: it used up the cases it had to move."
        for s in run["scenarios"]
        if s.get("seconds", planned) < 0.95 * planned
    ]


def _side_by_side(run: dict) -> list[str]:
    scale = run["scale"]
    small, large = f"{scale['baseline_cases']:,}", f"{run['cases']:,}"
    lines = [
        f"### Scale, side by side: {large} against {small} cases ({run['database']}, "
        f"{run['when']})",
        "",
        f"Both databases served at once, one worker each; each scenario driven on one, then "
        f"the other, {scale['rounds']} rounds of {scale['seconds']:g} s, the order reversed "
        f"each round. Code: {run.get('commit', '—')}.",
        "",
        f"| scenario | p50 at {small} (ms) | p50 at {large} (ms) | ratio of the sums | "
        f"≤ {SCALE_LIMIT}x |",
        "|---|---|---|---|---|",
    ]
    for name, figures in scale["scenarios"].items():
        lines.append(
            f"| {LABELS.get(name, name)} | {' / '.join(map(str, figures['small_p50_ms']))} | "
            f"{' / '.join(map(str, figures['large_p50_ms']))} | {figures['ratio']:.2f} | "
            f"{_mark(figures['ratio'] <= SCALE_LIMIT)} |"
        )
    return [*lines, ""]


def _codes_of(small: dict, large: dict) -> list[str]:
    """Which code each run measured; a warning where it differs (by the trees of what
    serves, where both runs recorded them, else by commit)."""
    codes = small.get("commit", "—"), large.get("commit", "—")
    line = f"Code: {codes[0]} at 10,000 cases, {codes[1]} at 1,000,000."
    served = small.get("served_code"), large.get("served_code")
    same = served[0] == served[1] if None not in served else codes[0] == codes[1]
    if codes[0] != codes[1] and same:
        line += " The same code serves in both."
    if not same:
        line += (
            " **Different code**: a scenario whose code changed between them is not measured "
            "for scale here; the side-by-side section above is."
        )
    return [line, ""]


def _scale_section(history: list[dict]) -> list[str]:
    """Latency at 1M cases against 10k, per scenario: side by side from the latest run that
    measured it so, and from the latest run of each size."""
    latest: dict[tuple[str, int], dict] = {}
    side_by_side: dict[str, dict] = {}
    for run in history:
        if "scenarios" in run:
            latest[(run["database"], run["cases"])] = run
        if "scale" in run:
            side_by_side[run["database"]] = run
    lines = []
    for run in side_by_side.values():
        lines += _side_by_side(run)
    for database in ("postgresql", "sqlite"):
        small, large = latest.get((database, 10_000)), latest.get((database, 1_000_000))
        if not (small and large):
            continue
        lines += [
            f"### Scale: 1,000,000 against 10,000 cases ({database}), the latest run of each",
            "",
            "Two runs minutes apart: the machine's drift between them counts as well.",
            "",
            *_codes_of(small, large),
            f"| scenario | p50 at 10k (ms) | p50 at 1M (ms) | ratio | ≤ {SCALE_LIMIT}x |",
            "|---|---|---|---|---|",
        ]
        for s in small["scenarios"]:
            other = next(o for o in large["scenarios"] if o["scenario"] == s["scenario"])
            ratio = other["p50_ms"] / s["p50_ms"] if s["p50_ms"] else 0
            lines.append(
                f"| {LABELS.get(s['scenario'], s['scenario'])} | {s['p50_ms']} | "
                f"{other['p50_ms']} | {ratio:.2f} | {_mark(ratio <= SCALE_LIMIT)} |"
            )
        lines.append("")
    return lines


def _summary_section(runs: list[dict]) -> list[str]:
    """Every run in one table, oldest first: how the ratios moved as the code changed."""
    lines = [
        "## Every run at a glance",
        "",
        "Throughput as a share of the same run's ceiling; targets in the header.",
        "",
        "| when | code | database | cases | "
        + " | ".join(
            f"{LABELS[name].split(',')[0]} ≥ {target:.0%}" for name, target in RATIO_TARGETS.items()
        )
        + f" | p99 < {P99_LIMIT_MS} ms (all but login) | verify events/s |",
        "|---|---|---|---|" + "---|" * len(RATIO_TARGETS) + "---|---|",
    ]
    for run in runs:
        by_name = {s["scenario"]: s for s in run["scenarios"]}
        ratios = [
            f"{by_name[name]['throughput_rps'] / run['ceiling_rps']:.1%}"
            if name in by_name
            else "—"
            for name in RATIO_TARGETS
        ]
        slow = [
            name for name, s in by_name.items() if name != "login" and s["p99_ms"] >= P99_LIMIT_MS
        ]
        lines.append(
            f"| {run['when'][:16].replace('T', ' ')} | {run.get('commit', '—')} | "
            f"{run['database']} | {run['cases']:,} | "
            + " | ".join(ratios)
            + f" | {'missed: ' + ', '.join(slow) if slow else 'met'}"
            + f" | {run['verify']['events_per_second']:,} |"
        )
    return [*lines, ""]


def render(history: list[dict]) -> str:
    runs = [r for r in history if "scenarios" in r]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`) from `bench/results.json`; every figure is",
        "from a recorded run. The server runs as in production (`referral serve`, uvicorn)",
        "in its own process; the load comes from `bench/load.py` in another process. Issue",
        "7's targets are for PostgreSQL, one worker, 32 clients, on the same machine.",
        "",
        "Scenarios: login (a referrer, no second factor); audited case read (a coordinator",
        "reads a case of their municipality: access check, the case and its records, the",
        "re-referral hint, one chained audit event); case list (a page of 50); referral",
        "intake (a new idempotent referral); transition (submitted → screening with",
        "If-Match); statistics query (a national table from the published snapshot).",
        "",
    ]
    lines += _summary_section(runs)
    lines += ["## Runs, latest first", ""]
    for run in reversed(runs):
        lines += _run_section(run)
    lines += _scale_section(history)
    lines += [
        "## Reading these figures",
        "",
        "- What limits each figure, and what would meet the missed targets:",
        "  `docs/adr/0011-performance-measurement-and-limits.md`; what was changed after the",
        "  first runs, and why: `docs/adr/0012-hot-path-statements.md` to",
        "  `docs/adr/0017-writes-and-list-rows-without-orm-objects.md`.",
        "- The seeded cases carry their lifecycle and audit trail. Since 2026-11-22 the cases the",
        "  read scenario reads also carry notes, a screening and an assessment, as their state",
        "  allows (each run's seeding line says how many); before that they carried none, and a",
        "  read returned the case alone. Decisions, consents and plans are not seeded.",
        "- The load driver, the server and PostgreSQL share the machine's two cores. The",
        "  ceiling is measured under the same conditions, so the ratios compare like with like.",
        "- The machine is a shared virtual one: the ceiling moved between 5,600 and 8,700 req/s",
        "  within one hour on 2026-11-21, and was 12,600-13,600 req/s a day later. A ratio moves",
        "  with it. Compare the req/s columns too; a run whose two ceiling measurements differ",
        "  much was disturbed while it ran.",
        "",
    ]
    return "\n".join(lines)


def _served_snapshot(run: dict) -> list[str]:
    served = run.get("served_snapshot")
    if not served:
        return []
    if "answered_ms" in served:  # a build is a job the server runs (ADR 0026)
        how = (
            "`POST /api/v1/stats/snapshot-builds`, answered in "
            f"{served['answered_ms']} ms, then polled until published; its cells computed in "
            "a process of its own, ADR 0025, 0026"
        )
    else:
        how = "`POST /api/v1/stats/snapshots`, its cells computed in a process of its own, ADR 0025"
    return [
        f"- Snapshot built through the API ({how}): **{served['seconds']} s**. Meanwhile the "
        f"worker answered `/livez` {served['livez_pings']:,} times, p99 "
        f"{served['livez_p99_ms']} ms, slowest {served['livez_max_ms']} ms. The worker's "
        "memory below includes the build."
    ]


def _served_walk(run: dict) -> list[str]:
    served = run.get("served_walk")
    if not served:
        return []
    return [
        f"- A walk of the whole trail through the API (`POST /api/v1/audit/verifications`, "
        f"answered in {served['answered_ms']} ms, then polled until it ended, ADR 0024): "
        f"**{served['seconds']} s** for {served['checked']:,} events. Meanwhile the worker "
        f"answered `/livez` {served['livez_pings']:,} times, p99 {served['livez_p99_ms']} ms, "
        f"slowest {served['livez_max_ms']} ms."
    ]


def _errors(errors: dict) -> str:
    return ", ".join(f"{status}x{count}" for status, count in errors.items())


def _reads_during_walks(run: dict) -> list[str]:
    during = run.get("reads_during_walks")
    if not during:
        return []
    return [
        f"- The read scenario again while walks of the whole trail ran back to back "
        f"({during['walks']} walks, each in a process of its own, ADR 0027): "
        f"**{during['throughput_rps']:,} req/s**, {during['share_of_alone']:.0%} of the "
        f"{during['alone_rps']:,} req/s without a walk; p99 {during['p99_ms']} ms"
        + (f"; errors {_errors(during['errors'])}." if during["errors"] else "; no errors.")
    ]


def _verify_how(verify: dict) -> str:
    if "rechecked" not in verify:
        return ""
    return (
        f"; {verify['rechecked']:,} events checked again on their values after the "
        "database's rendering missed (ADR 0013)"
    )
