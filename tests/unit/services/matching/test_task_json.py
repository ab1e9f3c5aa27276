"""A task across matching's internal poll API (MatchedTask.to_json / from_json)."""

from __future__ import annotations

import json

from services.common.matching.tasks import ACTIVITY, WORKFLOW, MatchedTask


def _across(task: MatchedTask) -> MatchedTask:
    return MatchedTask.from_json(json.loads(json.dumps(task.to_json())))


def test_a_workflow_task_keeps_the_events_it_carries() -> None:
    # The frontend answering the poll then need not read them from the store.
    events = [b"\xc3\x01first", b"\x00second\xff"]
    task = MatchedTask(WORKFLOW, "t1", {"run_id": "r1", "scheduled_event_id": 3, "events": events},
                       traceparent="00-abc-def-01")
    got = _across(task)
    assert got.task["events"] == events
    assert (got.kind, got.task_id, got.task["run_id"], got.traceparent) == (WORKFLOW, "t1", "r1", "00-abc-def-01")


def test_a_task_without_carried_events_has_none() -> None:
    got = _across(MatchedTask(WORKFLOW, "t2", {"run_id": "r2", "events": None}))
    assert got.task.get("events") is None
    got = _across(MatchedTask(ACTIVITY, "t3", {"run_id": "r3", "activity_id": "a"}))
    assert "events" not in got.task and got.task["activity_id"] == "a"
