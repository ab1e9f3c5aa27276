"""The visibility projection folds a batch of history records into one update per run."""

from __future__ import annotations

from typing import Any

import pytest

from kadence_protocol import avro
from services.visibility import projection
from services.visibility.projection import ExecutionStatus


def record(run: str, event_id: int, kind: str, attributes: dict[str, Any] | None = None,
           time: int = 0) -> dict[str, Any]:
    return {"namespace": "default", "workflow_id": f"wf-{run}", "run_id": run,
            "event": {"event_id": event_id, "event_time": time or 1000 + event_id, "event_type": kind,
                      "attributes": attributes, "hash": ""}}


STARTED = {"workflow_type": "Order", "task_queue": "q", "input": None, "execution_timeout_ms": 0,
           "workflow_task_timeout_ms": 10000, "request_id": "r", "identity": "", "continued_execution_run_id": None,
           "attempt": 1}


def test_a_batch_folds_into_one_update_per_run() -> None:
    updates = projection.fold([
        record("a", 1, "WorkflowExecutionStarted", STARTED, time=5000),
        record("b", 7, "WorkflowTaskScheduled"),
        record("a", 2, "WorkflowTaskScheduled"),
        record("a", 3, "WorkflowExecutionFailed", time=9000),
    ])
    a, b = updates
    assert (a.run_id, a.workflow_type, a.task_queue, a.start_time, a.execution_time) == ("a", "Order", "q", 5000, 5000)
    assert (a.status, a.close_time, a.last_event_id, a.newest_event_time) == (ExecutionStatus.FAILED, 9000, 3, 9000)
    # A run first seen mid-history: only what its events say.
    assert (b.run_id, b.workflow_type, b.status, b.close_time, b.last_event_id) == ("b", None, None, None, 7)


def test_redelivered_older_events_do_not_move_the_update_back() -> None:
    [update] = projection.fold([record("a", 5, "TimerFired"), record("a", 3, "TimerStarted")])
    assert update.last_event_id == 5 and update.newest_event_time == 1005


@pytest.mark.parametrize(("kind", "status"), list(projection.CLOSING_EVENTS.items()))
def test_every_closing_event_sets_its_status(kind: str, status: ExecutionStatus) -> None:
    [update] = projection.fold([record("a", 9, kind)])
    assert update.status is status and update.close_time == 1009


def test_decode_takes_history_records_and_skips_the_rest() -> None:
    value = avro.encode("HistoryRecord", record("a", 1, "WorkflowExecutionStarted", STARTED))
    assert projection.decode(value)["run_id"] == "a"
    for bad, reason in ((None, "no value"), (b"\x00junk", "unreadable"),
                        (avro.encode("DeadLetter", {"source_topic": "t", "partition": 0, "offset": 0, "key": None,
                                                    "value": b"", "reason": "r", "failed_at": 0}), "DeadLetter")):
        with pytest.raises(projection.Skipped, match=reason):
            projection.decode(bad)


def test_search_attributes_of_the_start_are_taken_and_junk_is_ignored() -> None:
    with_attributes = {**STARTED, "search_attributes": '{"CustomerId": "c-42", "Priority": 3}'}
    [update] = projection.fold([record("a", 1, "WorkflowExecutionStarted", with_attributes)])
    assert update.search_attributes == {"CustomerId": "c-42", "Priority": 3}
    for junk in ("not json", "[1, 2]"):
        [update] = projection.fold([record("a", 1, "WorkflowExecutionStarted", {**STARTED, "search_attributes": junk})])
        assert update.search_attributes is None and update.workflow_type == "Order"


def test_upserted_search_attributes_merge_in_event_order() -> None:
    from kadence_protocol.markers import SEARCH_ATTRIBUTES_MARKER

    def upsert(event_id: int, details: str) -> dict[str, Any]:
        return record("a", event_id, "MarkerRecorded", {"marker_name": SEARCH_ATTRIBUTES_MARKER, "details": details,
                                                        "workflow_task_completed_event_id": 0})
    [update] = projection.fold([
        record("a", 1, "WorkflowExecutionStarted", {**STARTED, "search_attributes": '{"Stage": "new", "Priority": 1}'}),
        upsert(5, '{"Stage": "paid"}'),
        record("a", 6, "MarkerRecorded", {"marker_name": "patch:x", "details": '{"Stage": "no"}',
                                          "workflow_task_completed_event_id": 0}),
        upsert(9, '{"Stage": "shipped", "Tags": ["a"]}'),
    ])
    assert update.search_attributes == {"Stage": "shipped", "Priority": 1, "Tags": ["a"]}


def test_the_statuses_are_those_history_closes_runs_with() -> None:
    # A run closed by an event the projection does not know would be listed as Running.
    from kadence_protocol.enums import CLOSED_STATUSES

    closed = set(ExecutionStatus) - {ExecutionStatus.RUNNING}
    assert {status.value for status in closed} == set(CLOSED_STATUSES)
    assert set(projection.CLOSING_EVENTS.values()) == closed
    [update] = projection.fold([record("a", 9, "WorkflowExecutionCanceled")])
    assert update.status is ExecutionStatus.CANCELED and update.close_time == 1009


def test_a_child_run_names_its_parent() -> None:
    child = {**STARTED, "parent_namespace": "default", "parent_workflow_id": "wf-p", "parent_run_id": "p",
             "parent_initiated_event_id": 5}
    [update, plain] = projection.fold([record("c", 1, "WorkflowExecutionStarted", child),
                                       record("a", 1, "WorkflowExecutionStarted", STARTED)])
    assert (update.parent_workflow_id, update.parent_run_id) == ("wf-p", "p")
    assert (plain.parent_workflow_id, plain.parent_run_id) == (None, None)
