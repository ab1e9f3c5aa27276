"""``kadence schedule describe`` and ``list`` say when a schedule no longer fires (its
invalid_schedule_error), and read an earlier frontend's answer, which has no such field."""

from __future__ import annotations

from typing import Any

import pytest

from kadence._admin_cli import _schedule_state, _schedule_table


def _schedule(**fields: Any) -> dict[str, Any]:
    return {"schedule_id": "nightly", "spec": {"cron": "0 0 * * *", "time_zone": "UTC", "jitter": "0s"},
            "action": {"workflow_type": "Report", "task_queue": "q", "input": []}, "overlap_policy": "skip",
            "catchup_window": "1m", "paused": False, "note": "", "next_action_times": [], "actions_started": 0,
            "actions_skipped": 1, "buffered": None, "pending_triggers": 0, "last_workflow_id": None,
            "recent_actions": [], **fields}


def test_a_schedule_that_cannot_fire_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    why = "spec.cron is 231 characters, over the 200 a cron expression takes"
    assert _schedule_state(_schedule(invalid_schedule_error=why)) == f"cannot fire ({why})"
    _schedule_table(_schedule(invalid_schedule_error=why))
    assert f"cannot fire ({why})" in capsys.readouterr().out


def test_states_as_before_with_or_without_the_field() -> None:
    assert _schedule_state(_schedule(invalid_schedule_error=None)) == "active"
    assert _schedule_state(_schedule(paused=True)) == "paused"  # an earlier frontend: no field
