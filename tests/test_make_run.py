"""What `make run` does after installing, end to end: `referral dev` on an empty var/.

Secrets generated (0600), embedded database migrated (0600), demo data seeded once, the
server answering with the printed logins; a second start reuses all of it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pyotp

from tests.server import ServerProcess


def _dev(var_dir: Path, log: Path) -> ServerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_VAR_DIR"] = str(var_dir)
    server = ServerProcess(["dev"], env, log)
    server.wait_ready()
    return server


def _logins(text: str) -> dict[str, tuple[str, str]]:
    """username -> (password, TOTP secret or '-')."""
    rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
    return {row[0]: (row[2], row[3]) for row in rows if len(row) == 4 and row[0] != "username"}


def test_referral_dev_from_nothing_then_again(tmp_path):
    var_dir = tmp_path / "var"
    log = tmp_path / "first.log"
    server = _dev(var_dir, log)
    base = server.base_url
    try:
        first = log.read_text()
        logins = _logins(first)
        assert "generated development secrets" in first
        assert len(logins) == 25
        password, secret = logins["gjilan.coordinator"]
        response = httpx.post(
            f"{base}/api/v1/auth/token",
            data={
                "username": "gjilan.coordinator",
                "password": password,
                "totp_code": pyotp.TOTP(secret).now(),
            },
        )
        assert response.status_code == 200
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        cases = httpx.get(f"{base}/api/v1/cases", headers=headers).json()
        assert len(cases["items"]) == 50  # a living system: a full first page of demo cases
        first = cases["items"][0]["id"]
        detail = httpx.get(f"{base}/api/v1/cases/{first}", headers=headers)
        assert detail.json()["subject"]["given_name"].startswith("Demo-")
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        server.stop()
    for name in ("dev-secrets.env", "demo-logins.txt", "referral.db"):
        assert stat.S_IMODE((var_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700

    log = tmp_path / "second.log"
    server = _dev(var_dir, log)
    try:
        second = log.read_text()
        assert "generated development secrets" not in second
        assert _logins(second) == logins
    finally:
        server.stop()
