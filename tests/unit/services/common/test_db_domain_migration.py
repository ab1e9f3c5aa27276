"""Migration 0012's CHECK constraints name exactly the values of the domain's enums."""

from __future__ import annotations

import re

import pytest

from kadence_protocol.enums import RunStatus, TaskKind, TimerKind
from services.common import db

pytestmark = pytest.mark.timeout(10)


def _checks() -> dict[str, set[str]]:
    # The checks as the migrations leave them: a later one may replace a check (0015 adds a timer kind).
    found = {}
    for path in sorted(db.migrations_dir().glob("*.sql")):
        if path.name < "0012":
            continue
        for name, values in re.findall(r"ADD CONSTRAINT (\w+)\s+CHECK \(\w+ IN \(([^)]*)\)\)", path.read_text()):
            found[name] = set(re.findall(r"'([^']*)'", values))
    return found


def test_each_check_lists_the_values_of_its_enum() -> None:
    checks = _checks()
    for table in ("executions", "current_executions", "visibility"):
        assert checks.pop(f"{table}_status_check") == {s.value for s in RunStatus}
    assert checks.pop("timers_kind_check") == {k.value for k in TimerKind}
    assert checks.pop("task_backlog_kind_check") == {k.value for k in TaskKind}
    assert checks == {}
