"""The code is type-checked (mypy --strict) and linted (ruff) as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_mypy_strict() -> None:
    result = _run("mypy", "--strict", "kadence", "kadence_protocol", "services", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    result = _run("ruff", "check", "kadence", "kadence_protocol", "services", "benchmarks", "tests")
    assert result.returncode == 0, result.stdout + result.stderr
