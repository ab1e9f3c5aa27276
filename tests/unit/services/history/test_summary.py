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
    assert set(got) == {"status", "result", "failure", "new_run_id", "cancel_details", "terminate_reason", "memo",
                        "history_size_bytes",
                        "reset_from_run_id", "attempt", "search_attributes",
                        "first_task_completed", "activities", "timers", "children", "update_requests",
                        "workflow_task"}
    assert got["status"] == "Running" and got["first_task_completed"] is True
    assert got["timers"]["odd/timer/id"]["timer_id"] == "odd/timer/id"
    assert got["activities"]["6"]["cancel_requested_event_id"] == 16
    # Only the request still waiting for the workflow, not the accepted one.
    assert got["update_requests"] == [{"update_id": "u3", "name": "set", "input": "[3]", "after_event_id": 0}]
    assert got["workflow_task"] == {"attempt": 1, "state": "Started", "scheduled_time": 1_700_000_019_000,
                                    "failures": 0, "last_failure": None}


def test_the_summary_shows_a_failing_workflow_tasks_attempt_and_last_failure() -> None:
    s = MutableState(namespace="ns", workflow_id="wf", run_id="r", status="Running")
    assert orjson.loads(summary(s))["workflow_task"] is None  # none outstanding, none failing
    first = {"message": "first", "type": "E", "stack_trace": "", "non_retryable": False, "details": None}
    s.wt_failures, s.wt_last_failure = 1, first
    assert orjson.loads(summary(s))["workflow_task"] == {"attempt": 2, "state": "Backoff", "scheduled_time": None,
                                                         "failures": 1, "last_failure": first}
    s.wt_transient_failures, s.wt_transient_failure = 3, {**first, "message": "fourth"}
    got = orjson.loads(summary(s))["workflow_task"]
    assert got["attempt"] == 5 and got["failures"] == 4 and got["last_failure"]["message"] == "fourth"


def test_a_run_without_waiting_update_requests_is_told_apart_in_its_bytes() -> None:
    s = MutableState(namespace="ns", workflow_id="wf", run_id="r", status="Running")
    assert NO_UPDATE_REQUESTS in summary(s)
    assert NO_UPDATE_REQUESTS not in summary(MutableState.loads(FIXTURE.read_bytes()))


def test_the_summary_carries_the_runs_search_attributes_with_its_upserts_merged() -> None:
    s = MutableState(namespace="ns", workflow_id="wf", run_id="r", status="Running")
    assert orjson.loads(summary(s))["search_attributes"] is None
    s.search_attributes = '{"Stage":"paid","CustomerId":"c-1"}'
    assert orjson.loads(orjson.loads(summary(s))["search_attributes"]) == {"Stage": "paid", "CustomerId": "c-1"}
