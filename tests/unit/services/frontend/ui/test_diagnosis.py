"""The run page's "why is it waiting?" hints."""

from __future__ import annotations

from typing import Any

from services.frontend.ui.diagnosis import Severity, hints

NOW = 100_000


def run(**fields: Any) -> dict[str, Any]:
    return {"status": "Running", "task_queue": "orders", "pending_activities": [], "pending_timers": [], **fields}


def test_a_retrying_activity_is_a_problem_naming_its_attempt_and_failure() -> None:
    activity = {"activity_type": "charge", "activity_id": "1", "attempt": 4, "state": "Scheduled",
                "last_failure": {"type": "ValueError", "message": "declined"}}
    (hint,) = hints(run(pending_activities=[activity]), [], NOW)
    assert hint.severity is Severity.PROBLEM
    assert "attempt 4" in hint.text and "ValueError: declined" in hint.text


def test_an_activity_nobody_picks_up_points_at_its_task_queue() -> None:
    activity = {"activity_type": "charge", "activity_id": "1", "attempt": 1, "state": "Scheduled",
                "scheduled_time": NOW - 60_000, "task_queue": "cards"}
    (hint,) = hints(run(pending_activities=[activity]), [], NOW)
    assert hint.severity is Severity.WARNING and "task queue cards" in hint.text and "60 s" in hint.text


def test_a_workflow_task_without_worker_and_a_failing_workflow_task() -> None:
    waiting = [{"event_id": 2, "event_time": NOW - 30_000, "event_type": "WorkflowTaskScheduled"}]
    (hint,) = hints(run(), waiting, NOW)
    assert hint.severity is Severity.WARNING and "task queue orders" in hint.text
    failing = [{"event_id": 4, "event_time": NOW, "event_type": "WorkflowTaskFailed",
                "attributes": {"failure": {"type": "NameError", "message": "x"}}}]
    assert [h.severity for h in hints(run(), failing, NOW)] == [Severity.PROBLEM]
    # The attempts after the first failure are not events: describe's workflow_task counts them.
    task = {"attempt": 7, "state": "Backoff", "failures": 6, "last_failure": {"type": "NameError", "message": "y"}}
    (hint,) = hints(run(workflow_task=task), failing, NOW)
    assert hint.severity is Severity.PROBLEM and "attempt 7" in hint.text and "NameError: y" in hint.text


def test_a_quiet_run_waits_for_a_signal_and_a_closed_run_has_no_hints() -> None:
    done = [{"event_id": 4, "event_time": NOW, "event_type": "WorkflowTaskCompleted"}]
    assert "signal" in hints(run(), done, NOW)[0].text
    assert hints(run(status="Completed"), done, NOW) == []
