"""The bench's synthetic data, read through the app as the bench reads it: a data set the
app cannot read would measure error pages."""

from __future__ import annotations

import asyncio

import httpx
import pyotp

from bench.run import bench_settings, prepare
from referral import migrate
from referral.main import create_app
from tests.databases import ScratchDatabase


async def _read_as_the_bench_coordinator(settings, prepared: dict) -> list[dict]:
    app = create_app(settings)
    actors = prepared["seeded"]["actors"]
    form = {
        "username": actors["coordinator"],
        "password": actors["password"],
        "totp_code": pyotp.TOTP(actors["coordinator_totp"]).now(),
    }
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            signed_in = await client.post("/api/v1/auth/token", data=form)
            assert signed_in.status_code == 200, signed_in.text
            headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            cases = []
            for case_id in prepared["read_ids"]:
                response = await client.get(f"/api/v1/cases/{case_id}", headers=headers)
                assert response.status_code == 200, response.text
                cases.append(response.json())
            return cases
    finally:
        await app.state.engine.dispose()


def test_the_cases_the_bench_reads_carry_records_that_decrypt(tmp_path):
    database = ScratchDatabase.create(tmp_path, "benchseed")
    try:
        migrate.upgrade(database.url)
        settings = bench_settings(database.url)
        prepared = asyncio.run(prepare(settings, 60, pool=5))
        cases = asyncio.run(_read_as_the_bench_coordinator(settings, prepared))
    finally:
        database.drop()

    assert cases
    for case in cases:
        notes = case["sections"]["general"]["notes"]
        assert sorted(n["body"][:25] for n in notes) == [
            "[BENCH] synthetic note 1:",
            "[BENCH] synthetic note 2:",
        ]
        screened = case["entered"].get("screening") is not None
        assert (case["screening"] is not None) == screened
        if screened:
            assert case["screening"]["summary"].startswith("[BENCH] synthetic screening")
        assessments = case["sections"]["general"]["assessments"]
        assessed = case["entered"].get("assessment") is not None
        assert len(assessments) == (1 if assessed else 0)
        if assessed:
            assert assessments[0]["totals"] == {"engagement": 2, "intent": 1, "capability": 1}
    assert any(case["screening"] for case in cases)  # the data set exercises every kind
    assert prepared["read_records"] == sum(
        2 + (case["screening"] is not None) + len(case["sections"]["general"]["assessments"])
        for case in cases
    )
