"""A retried activity attempt writes no event, yet what it changed is durable: history
restarted between two attempts hands the next one its number and the heartbeat details,
and the completing attempt's started event names the failure before it. Kafka and
PostgreSQL are real; the worker is played by hand."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from .history_harness import Topics, history_of, history_running, start_record, task_ref, until

pytestmark = pytest.mark.timeout(60)
FAILURE = {"message": "boom", "type": "IOError", "stack_trace": "", "non_retryable": False, "details": None}


async def _snapshot(dsn: str, run_id: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        data = await conn.fetchval("SELECT state FROM executions WHERE run_id = $1", run_id)
    finally:
        await conn.close()
    return dict(orjson.loads(data))


async def test_an_attempts_bookkeeping_survives_a_history_restart(broker, fresh_dsn) -> None:
    policy = {"initial_interval_ms": 3000, "backoff_coefficient": 1.0, "maximum_interval_ms": 0,
              "maximum_attempts": 0, "non_retryable_error_types": []}
    async with Topics(broker.bootstrap) as io:
        async with history_running(broker.bootstrap, fresh_dsn):
            await io.send("StartWorkflowExecution", start_record("wf-durable"))
            wt = await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-durable")
            await io.send("RespondWorkflowTaskCompleted", task_ref(wt) | {"commands": [
                {"command_type": "ScheduleActivityTask", "attributes": {
                    "activity_id": "1", "activity_type": "a", "task_queue": "", "input": "[]",
                    "schedule_to_close_timeout_ms": 0, "schedule_to_start_timeout_ms": 0,
                    "start_to_close_timeout_ms": 30_000, "heartbeat_timeout_ms": 0, "retry_policy": policy}}]})
            first = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-durable")
            run_id = str(first["run_id"])
            await io.send("RecordActivityTaskHeartbeat", task_ref(first) | {"details": '"half"'})
            await io.send("RespondActivityTaskFailed", task_ref(first) | {"failure": FAILURE})

            async def retried() -> bool:
                act = dict(_snapshot_activity(await _snapshot(fresh_dsn, run_id)))
                return act["attempt"] == 2 and act["last_failure"] == FAILURE and act["heartbeat_details"] == '"half"'

            await until(retried, seconds=10)
            before = [e["event_type"] for e in await history_of(fresh_dsn, run_id)]
            assert before[-1] == "ActivityTaskScheduled"  # the failed attempt wrote nothing
        async with history_running(broker.bootstrap, fresh_dsn):
            # (A new owner may publish the first task again: the outbox relay is at least once.)
            second = await io.next("kadence.tasks", "ActivityTask", workflow_id="wf-durable", attempt=2, timeout=20)
            assert second["attempt"] == 2 and second["heartbeat_details"] == '"half"'
            await io.send("RespondActivityTaskCompleted", task_ref(second) | {"result": '"ok"'})
            await io.next("kadence.tasks", "WorkflowTask", workflow_id="wf-durable", timeout=20)
            events = await history_of(fresh_dsn, run_id)
    kinds = [e["event_type"] for e in events]
    assert kinds[len(before):len(before) + 2] == ["ActivityTaskStarted", "ActivityTaskCompleted"]
    started = events[len(before)]["attributes"]
    assert started["attempt"] == 2 and started["last_failure"] == FAILURE


def _snapshot_activity(state: dict[str, object]) -> dict[str, object]:
    activities = state["activities"]
    assert isinstance(activities, dict) and len(activities) == 1
    return dict(next(iter(activities.values())))
