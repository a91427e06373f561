"""The bench's own rules: how the transition pool is shared, how the scale target is read."""

from __future__ import annotations

from bench.report import render
from bench.run import POOL_RATE, SUBMITTED_POOL, against_ceiling, split, transition_pool


def test_the_transition_pool_is_shared_out_by_run_time_without_overlap():
    assert split(list(range(10)), [2, 1, 1]) == [[0, 1, 2, 3, 4], [5, 6], [7, 8]]
    assert [len(s) for s in split(list(range(100_000)), [12, 7], most=500)] == [500, 500]


def test_the_transition_pool_lasts_for_every_run_that_takes_from_it():
    # the main run (2 + 10 s) and two scale rounds (2 + 5 s each)
    assert transition_pool(12 + 7 + 7) == 26 * POOL_RATE
    assert transition_pool(1) == SUBMITTED_POOL


def test_each_scenario_is_recorded_as_ratios_to_the_ceiling():
    ceiling = {"throughput_rps": 1000.0, "p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 4.0}
    read = {"throughput_rps": 75.0, "p50_ms": 40.0, "p95_ms": 54.0, "p99_ms": 70.0}
    found = against_ceiling(
        [
            {"scenario": "ceiling", **ceiling},
            {"scenario": "read", **read},
            {"scenario": "ceiling", **ceiling, "throughput_rps": 1500.0},
        ]
    )
    assert found["ceiling_rps"] == 1250.0
    assert [s["scenario"] for s in found["scenarios"]] == ["read"]
    assert found["scenarios"][0]["ratio_to_ceiling"] == {
        "throughput": 0.06,
        "p50": 20.0,
        "p95": 18.0,
        "p99": 17.5,
    }
    assert len(found["ceiling_runs"]) == 2


def test_a_scenario_that_ran_out_of_cases_is_called_short():
    short = _run(10_000, 20, seconds=5.22)
    assert "**audited case read ran 5.22 s of 10**" in render([short])
    assert " s of 10**" not in render([_run(10_000, 20)])


def test_the_summary_names_the_scenarios_whose_p99_is_over_the_limit():
    slow, fast = _run(10_000, 120), _run(1_000_000, 60)
    rows = [line for line in render([slow, fast]).splitlines() if line.startswith("| 2026")]
    assert rows[0].endswith("| missed: read | 1 |")
    assert rows[1].endswith("| met | 1 |")


def _run(cases: int, p50: float, scale: dict | None = None, seconds: float = 10) -> dict:
    scenario = {
        "scenario": "read",
        "seconds": seconds,
        "throughput_rps": 100.0,
        "p50_ms": p50,
        "p95_ms": p50,
        "p99_ms": p50,
        "errors": {},
    }
    run = {
        "when": "2026-11-21T23:00:00+00:00",
        "commit": "abc1234",
        "machine": "synthetic",
        "database": "postgresql",
        "cases": cases,
        "workers": 1,
        "clients": 32,
        "seconds_per_scenario": 10,
        "command": "make bench",
        "ceiling_rps": 1000.0,
        "ceiling_runs": [{"throughput_rps": 1000.0, "p50_ms": 2, "p95_ms": 3, "p99_ms": 5}],
        "scenarios": [scenario],
        "verify": {"events": 1, "seconds": 1, "events_per_second": 1},
        "snapshot": {"seconds": 1, "cells": 1, "suppressed": 0},
        "server_memory": {"peak_rss_mib": 100, "rss_mib": 100},
        "seed_seconds": 1,
        "audit_events": 1,
    }
    return run | ({"scale": scale} if scale else {})


def test_the_scale_target_is_read_from_the_side_by_side_rounds():
    scale = {
        "baseline_cases": 10_000,
        "rounds": 2,
        "seconds": 5,
        "scenarios": {
            "read": {"small_p50_ms": [40, 50], "large_p50_ms": [50, 60], "ratio": 1.222},
            "list": {"small_p50_ms": [40, 40], "large_p50_ms": [60, 60], "ratio": 1.5},
        },
    }
    # the two single runs alone would say 3x: the side-by-side rounds say otherwise
    page = render([_run(10_000, 20), _run(1_000_000, 60, scale)])
    assert "| audited case read | 40 / 50 | 50 / 60 | 1.22 | met |" in page
    assert "| case list, page of 50 | 40 / 40 | 60 / 60 | 1.50 | **missed** |" in page
    assert "| audited case read | 20 | 60 | 3.00 | **missed** |" in page


def test_the_latest_runs_of_each_size_say_whether_the_same_code_served_them():
    small = _run(10_000, 20) | {"commit": "aaa1111", "served_code": "tree1"}
    same = _run(1_000_000, 30) | {"commit": "bbb2222", "served_code": "tree1"}
    other = _run(1_000_000, 30) | {"commit": "bbb2222", "served_code": "tree2"}
    unrecorded = _run(1_000_000, 30) | {"commit": "bbb2222"}
    assert "The same code serves in both." in render([small, same])  # a commit of figures
    for large in (other, unrecorded):
        page = render([small, large])
        assert "**Different code**" in page
        assert "The same code serves in both." not in page


def test_a_snapshot_built_through_the_api_is_reported_and_older_runs_still_render():
    served = {
        "seconds": 58.1,
        "cells": 20691,
        "livez_pings": 2400,
        "livez_p99_ms": 4.2,
        "livez_max_ms": 34.0,
    }
    page = render([_run(10_000, 20), _run(1_000_000, 30) | {"served_snapshot": served}])
    assert "Snapshot built through the API" in page
    assert "**58.1 s**" in page
    assert "answered `/livez` 2,400 times, p99 4.2 ms, slowest 34.0 ms" in page
    assert page.count("Snapshot built through the API") == 1  # the older run has none


def test_a_build_run_as_a_job_reports_how_soon_its_request_was_answered():
    served = {
        "seconds": 51.0,
        "answered_ms": 12.5,
        "cells": 20691,
        "livez_pings": 2400,
        "livez_p99_ms": 4.2,
        "livez_max_ms": 34.0,
    }
    older = served.copy()
    del older["answered_ms"]
    page = render(
        [
            _run(10_000, 20) | {"served_snapshot": older},
            _run(1_000_000, 30) | {"served_snapshot": served},
        ]
    )
    assert "`POST /api/v1/stats/snapshot-builds`, answered in 12.5 ms, then polled" in page
    assert "**51.0 s**" in page
    assert "`POST /api/v1/stats/snapshots`, its cells computed" in page  # the older run's way


def test_a_walk_through_the_api_is_reported_where_a_run_has_one():
    walk = {
        "seconds": 14.2,
        "answered_ms": 9.1,
        "checked": 3036000,
        "livez_pings": 600,
        "livez_p99_ms": 6.0,
        "livez_max_ms": 21.5,
    }
    page = render([_run(10_000, 20), _run(1_000_000, 30) | {"served_walk": walk}])
    assert "answered in 9.1 ms, then polled until it ended" in page
    assert "**14.2 s** for 3,036,000 events" in page
    assert "answered `/livez` 600 times, p99 6.0 ms, slowest 21.5 ms" in page
    assert page.count("A walk of the whole trail through the API") == 1


def test_reads_during_walks_are_reported_beside_the_reads_alone():
    during = {
        "scenario": "read",
        "throughput_rps": 412.5,
        "p99_ms": 131.0,
        "errors": {"503": 2},
        "walks": 3,
        "alone_rps": 600.0,
        "share_of_alone": 0.688,
    }
    page = render([_run(10_000, 20), _run(1_000_000, 30) | {"reads_during_walks": during}])
    assert "while walks of the whole trail ran back to back (3 walks" in page
    assert "**412.5 req/s**, 69% of the 600.0 req/s without a walk; p99 131.0 ms" in page
    assert "errors 503x2." in page
    assert page.count("while walks of the whole trail") == 1  # the older run has none
