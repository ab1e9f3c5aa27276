"""The versions the timer's requested start bumped read their predecessors with defaults:
RespondWorkflowTaskCompleted and RespondActivityTaskCompleted v8 (a StartTimer before
requested_time), HistoryEvent v13 and HistoryRecord v12 (a TimerStarted before start_time);
a run written before the bump, after it (the new field set) or across it verifies and folds."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.history.audit import replay as r
from services.history.state import rebuild
from tests.unit.schemas.test_chain_versions import CURRENT, RUN, Writer, _load, _topic
from tests.unit.schemas.test_policy_versions import _old_request

pytestmark = pytest.mark.timeout(10)
V13 = Writer(_load("kadence.HistoryEvent.v13.avsc"), _load("kadence.HistoryRecord.v12.avsc"))
TIMER = {"command_type": "StartTimer", "attributes": {"timer_id": "1", "start_to_fire_timeout_ms": 1000}}


def test_a_version_8_task_answer_reads_a_timer_without_a_requested_time() -> None:
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 2, "attempt": 1,
              "identity": "i", "commands": [TIMER], "started_time": 0}
    name, read = avro.decode(_old_request("kadence.RespondWorkflowTaskCompleted.v8.avsc",
                                          "RespondWorkflowTaskCompleted", answer))
    assert name == "RespondWorkflowTaskCompleted"
    assert read["commands"] == [{**TIMER, "attributes": {**TIMER["attributes"], "requested_time": None}}]
    current = {**answer, "commands": [{**TIMER, "attributes": {**TIMER["attributes"], "requested_time": 1234}}]}
    assert avro.decode(avro.encode("RespondWorkflowTaskCompleted", current))[1]["commands"] == current["commands"]


def test_a_version_8_activity_answer_reads_a_run_ahead_timer_without_a_requested_time() -> None:
    ahead = {"after_scheduled_event_id": 2, "after_started_time": 1000, "started_time": 1010, "commands": [TIMER],
             "ahead_id": 7, "after_ahead_id": 0}
    answer = {"namespace": "default", "workflow_id": "w", "run_id": "r", "scheduled_event_id": 5, "attempt": 1,
              "identity": "i", "result": "1", "workflow_task": ahead}
    fields = {f["name"] for f in _load("kadence.RespondActivityTaskCompleted.v8.avsc")["fields"]}
    name, read = avro.decode(_old_request("kadence.RespondActivityTaskCompleted.v8.avsc",
                                          "RespondActivityTaskCompleted",
                                          {k: v for k, v in answer.items() if k in fields}))
    assert name == "RespondActivityTaskCompleted"
    assert read["workflow_task"]["commands"][0]["attributes"]["requested_time"] is None


def _bodies(start_time: int | None) -> list[tuple[str, dict[str, Any]]]:
    """A run whose first task starts a one-second timer, which fires; it then completes."""
    timer = {"timer_id": "1", "start_to_fire_timeout_ms": 1000, "workflow_task_completed_event_id": 4}
    if start_time is not None:
        timer["start_time"] = start_time
    return [
        ("WorkflowExecutionStarted", {"workflow_type": "Nap", "task_queue": "q", "input": "[]",
                                      "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000,
                                      "request_id": "r1", "identity": "", "continued_execution_run_id": None,
                                      "attempt": 1}),
        ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ("WorkflowTaskStarted", {"scheduled_event_id": 2, "identity": "w", "started_time": 1003}),
        ("WorkflowTaskCompleted", {"scheduled_event_id": 2, "started_event_id": 3, "identity": "w"}),
        ("TimerStarted", timer),
        ("TimerFired", {"timer_id": "1", "started_event_id": 5}),
        ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ("WorkflowTaskStarted", {"scheduled_event_id": 7, "identity": "w", "started_time": 2004}),
        ("WorkflowTaskCompleted", {"scheduled_event_id": 7, "started_event_id": 8, "identity": "w"}),
        ("WorkflowExecutionCompleted", {"result": '"done"', "workflow_task_completed_event_id": 9}),
    ]


def _sealed(writers: list[Writer], start_time: int | None) -> tuple[list[bytes], list[bytes]]:
    rows, records, previous = [], [], ""
    for i, (kind, attributes) in enumerate(_bodies(start_time), start=1):
        writer = writers[min(i, len(writers)) - 1]
        event = {"event_id": i, "event_time": 1000 + i, "event_type": kind, "attributes": attributes}
        sealed, row = writer.seal(previous, event)
        previous = sealed["hash"]
        rows.append(row)
        records.append(writer.record(sealed))
    return rows, records


def _fire_at_after(rows: list[bytes], n: int) -> int:
    """The pending timer's fire_at in the fold of the first ``n`` stored events."""
    events = [avro.decode(row)[1] for row in rows[:n]]
    return rebuild(RUN.namespace, RUN.workflow_id, RUN.run_id, events).timers["1"].fire_at


def test_a_run_written_before_the_field_reads_null_and_fires_from_the_event_time() -> None:
    rows, records = _sealed([V13], None)
    started = avro.decode(rows[4])[1]
    assert started["event_type"] == "TimerStarted" and started["attributes"]["start_time"] is None
    assert _fire_at_after(rows, 5) == 1005 + 1000
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []


@pytest.mark.parametrize("writers", [[CURRENT], [V13] * 4 + [CURRENT] * 6], ids=["current", "upgraded-midway"])
def test_a_run_with_a_start_time_verifies_and_fires_from_it(writers: list[Writer]) -> None:
    rows, records = _sealed(writers, 1003)
    assert avro.decode(rows[4])[1]["attributes"]["start_time"] == 1003
    assert _fire_at_after(rows, 5) == 1003 + 1000
    replay = _topic(records)
    audit = replay.runs[RUN.run_id]
    assert replay.divergences() == [] and audit.state.status == "Completed"
    assert r.compare_run(audit, rows, audit.state.dumps()) == []
