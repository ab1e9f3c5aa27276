"""The run summary history writes for the frontend (services/history/summary.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.history.state import MutableState
from services.history.summary import NO_UPDATE_REQUESTS, summary

pytestmark = pytest.mark.timeout(10)
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "snapshot_v0.json"


def test_the_summary_names_what_the_frontend_reads_and_nothing_private() -> None:
    s = MutableState.loads(FIXTURE.read_bytes())
    got = orjson.loads(summary(s))
    assert set(got) == {"status", "result", "failure", "new_run_id", "cancel_details", "memo", "history_size_bytes",
                        "reset_from_run_id", "attempt",
                        "first_task_completed", "activities", "timers", "children", "update_requests"}
    assert got["status"] == "Running" and got["first_task_completed"] is True
    assert got["timers"]["odd/timer/id"]["timer_id"] == "odd/timer/id"
    assert got["activities"]["6"]["cancel_requested_event_id"] == 16
    # Only the request still waiting for the workflow, not the accepted one.
    assert got["update_requests"] == [{"update_id": "u3", "name": "set", "input": "[3]"}]


def test_a_run_without_waiting_update_requests_is_told_apart_in_its_bytes() -> None:
    s = MutableState(namespace="ns", workflow_id="wf", run_id="r", status="Running")
    assert NO_UPDATE_REQUESTS in summary(s)
    assert NO_UPDATE_REQUESTS not in summary(MutableState.loads(FIXTURE.read_bytes()))
