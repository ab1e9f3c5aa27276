"""A long synthetic history for the SDK replay benchmark: N sequential activities."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from kadence import workflow

from .workflows import identity


@workflow.defn
class LoopActivities:
    @workflow.run
    async def run(self, count: int) -> int:
        total = 0
        for i in range(count):
            total += await workflow.execute_activity(identity, i, start_to_close_timeout=timedelta(seconds=5))
        return total


def loop_history(target_events: int) -> list[dict[str, Any]]:
    """The history LoopActivities records, about ``target_events`` long."""
    count = max(1, (target_events - 8) // 6)
    events: list[dict[str, Any]] = []

    def add(kind: str, **attrs: Any) -> int:
        events.append({"event_id": len(events) + 1, "event_time": 1_700_000_000_000 + len(events),
                       "event_type": kind, "attributes": attrs})
        return len(events)

    def task() -> int:
        scheduled = add("WorkflowTaskScheduled", task_queue="q", start_to_close_timeout_ms=10000, attempt=1)
        started = add("WorkflowTaskStarted", scheduled_event_id=scheduled, identity="w")
        return add("WorkflowTaskCompleted", scheduled_event_id=scheduled, started_event_id=started, identity="w")

    add("WorkflowExecutionStarted", workflow_type="LoopActivities", task_queue="q", input=json.dumps([count]),
        execution_timeout_ms=0, workflow_task_timeout_ms=10000, request_id="", identity="",
        continued_execution_run_id=None, attempt=1)
    completed = task()
    for i in range(count):
        sid = add("ActivityTaskScheduled", activity_id=str(i + 1), activity_type="identity", task_queue="q",
                  input=json.dumps([i]), schedule_to_close_timeout_ms=0, schedule_to_start_timeout_ms=0,
                  start_to_close_timeout_ms=5000, heartbeat_timeout_ms=0, retry_policy=None,
                  workflow_task_completed_event_id=completed)
        started = add("ActivityTaskStarted", scheduled_event_id=sid, attempt=1, identity="w")
        add("ActivityTaskCompleted", scheduled_event_id=sid, started_event_id=started, result=json.dumps(i),
            identity="w")
        completed = task()
    add("WorkflowExecutionCompleted", result=json.dumps(count * (count - 1) // 2),
        workflow_task_completed_event_id=completed)
    return events
