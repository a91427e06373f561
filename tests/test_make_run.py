"""What `make run` does after installing, end to end: `referral dev` on an empty var/.

Secrets generated (0600), embedded database migrated (0600), demo data seeded once, the
server answering with the printed logins; a second start reuses all of it.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(var_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["REFERRAL_VAR_DIR"] = str(var_dir)
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "referral.cli", "dev", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def _wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"referral dev exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"referral dev did not become ready:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _logins(text: str) -> dict[str, tuple[str, str]]:
    """username -> (password, TOTP secret or '-')."""
    rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
    return {row[0]: (row[2], row[3]) for row in rows if len(row) == 4 and row[0] != "username"}


def test_referral_dev_from_nothing_then_again(tmp_path):
    var_dir = tmp_path / "var"
    port = _free_port()
    log = tmp_path / "first.log"
    process = _start(var_dir, port, log)
    try:
        _wait_ready(port, process, log)
        first = log.read_text()
        logins = _logins(first)
        assert "generated development secrets" in first
        assert len(logins) == 25
        password, secret = logins["gjilan.coordinator"]
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/token",
            data={
                "username": "gjilan.coordinator",
                "password": password,
                "totp_code": pyotp.TOTP(secret).now(),
            },
        )
        assert response.status_code == 200
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        cases = httpx.get(f"http://127.0.0.1:{port}/api/v1/cases", headers=headers).json()
        assert len(cases["items"]) == 50  # a living system: a full first page of demo cases
        first = cases["items"][0]["id"]
        detail = httpx.get(f"http://127.0.0.1:{port}/api/v1/cases/{first}", headers=headers)
        assert detail.json()["subject"]["given_name"].startswith("Demo-")
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        _stop(process)
    for name in ("dev-secrets.env", "demo-logins.txt", "referral.db"):
        assert stat.S_IMODE((var_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700

    log = tmp_path / "second.log"
    process = _start(var_dir, port, log)
    try:
        _wait_ready(port, process, log)
        second = log.read_text()
        assert "generated development secrets" not in second
        assert _logins(second) == logins
    finally:
        _stop(process)
