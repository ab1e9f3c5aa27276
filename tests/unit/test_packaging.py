"""Packaging hygiene: the version on the command line, py.typed, the license file."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_kadence_version_prints_the_project_version() -> None:
    result = subprocess.run([sys.executable, "-m", "kadence.cli", "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kadence {PYPROJECT['project']['version']}"


def test_the_sdk_is_marked_typed() -> None:
    # PEP 561: without it, users' mypy --strict reports every kadence import as untyped.
    # The wheel takes every file of the kadence package ([tool.hatch.build.targets.wheel]).
    assert (ROOT / "kadence" / "py.typed").is_file()
    assert "kadence" in PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]


def test_license_file_matches_pyproject() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
