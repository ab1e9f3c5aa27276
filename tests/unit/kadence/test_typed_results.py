"""The typed overloads of execute_activity, execute_local_activity, the child workflow calls and
Client.execute_workflow: mypy --strict infers results from the function or run method given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

TYPED = Path(__file__).parent / "typed"


def _mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir", str(cache),
                           str(path)], capture_output=True, text=True, timeout=170, check=False)


def test_results_are_inferred_and_a_wrong_use_is_refused(tmp_path: Path) -> None:
    good = _mypy(TYPED / "typed_results.py", tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = _mypy(TYPED / "typed_results_wrong.py", tmp_path)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    # mypy names the mismatch from either side (the argument's or the assignment's).
    errors = {line.split(":")[1]: line for line in wrong.stdout.splitlines() if ": error:" in line}
    assert sorted(errors) == ["16", "17"], wrong.stdout
    assert "Receipt" in errors["16"] and "str" in errors["16"]
    assert "list[str]" in errors["17"] and "int" in errors["17"]
