"""The audit's pure verification (services.audit.replay): gaps, duplicates, chain breaks,
fold errors and the comparison with stored rows, without any I/O."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kadence_protocol import avro
from services.audit import replay as r
from services.common import chain
from services.history.state import rebuild

pytestmark = pytest.mark.timeout(10)
RUN = r.RunKey("default", "wf-1", "run-1")


def _history() -> list[dict[str, Any]]:
    """A small chained history: started, a workflow task, a marker, completed."""
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("WorkflowExecutionStarted", {"workflow_type": "Greet", "task_queue": "q", "input": "[]",
                                      "execution_timeout_ms": 0, "workflow_task_timeout_ms": 10000,
                                      "request_id": "r1", "identity": "", "continued_from_run_id": None,
                                      "attempt": 1}),
        ("WorkflowTaskScheduled", {"task_queue": "q", "start_to_close_timeout_ms": 10000, "attempt": 1}),
        ("WorkflowTaskStarted", {"scheduled_event_id": 2, "identity": "w", "request_id": ""}),
        ("WorkflowTaskCompleted", {"scheduled_event_id": 2, "started_event_id": 3, "identity": "w"}),
        ("MarkerRecorded", {"marker_name": "m", "details": None, "workflow_task_completed_event_id": 4}),
        ("WorkflowExecutionCompleted", {"result": '"done"', "workflow_task_completed_event_id": 4}),
    ]
    events, previous = [], ""
    for i, (kind, attrs) in enumerate(bodies, start=1):
        event = {"event_id": i, "event_time": 1000 + i, "event_type": kind, "attributes": attrs}
        # Round-trip through the codec so the attributes carry every field with its default.
        event = avro.decode(avro.encode("HistoryEvent", {**event, "hash": ""}))[1]
        event["hash"] = chain.event_hash(previous, event)
        previous = event["hash"]
        events.append(event)
    return events


def _audit(events: list[dict[str, Any]]) -> r.RunAudit:
    audit = r.RunAudit(RUN)
    for e in events:
        audit.add(e)
    audit.finish()
    return audit


def test_a_clean_history_folds_to_the_state_the_service_would_rebuild() -> None:
    events = _history()
    audit = _audit(events)
    assert audit.divergences == []
    assert audit.state.dumps() == rebuild("default", "wf-1", "run-1", events).dumps()
    assert audit.state.status == "Completed"


def test_an_identical_repeat_is_a_harmless_duplicate() -> None:
    events = _history()
    audit = _audit([*events[:4], copy.deepcopy(events[2]), copy.deepcopy(events[3]), *events[4:]])
    assert audit.divergences == [] and audit.duplicates == 2


def test_a_repeat_that_differs_is_a_conflicting_duplicate() -> None:
    events = _history()
    other = copy.deepcopy(events[4])
    other["attributes"]["marker_name"] = "other"
    audit = _audit([*events, other])
    assert [(d.kind, d.event_id) for d in audit.divergences] == [(r.CONFLICTING_DUPLICATE, 5)]
    assert "attributes" in audit.divergences[0].detail


def test_a_missing_event_is_a_gap() -> None:
    events = _history()
    audit = _audit(events[:2] + events[3:])
    assert [(d.kind, d.event_id) for d in audit.divergences] == [(r.GAP, 3)]
    assert "3..3" in audit.divergences[0].detail


def test_events_delivered_out_of_order_are_held_until_the_gap_fills() -> None:
    events = _history()
    audit = _audit([events[0], events[2], events[1], *events[3:]])
    assert audit.divergences == [] and audit.state.status == "Completed"


def test_a_changed_event_breaks_the_chain_at_that_event() -> None:
    events = _history()
    events[4]["attributes"]["marker_name"] = "tampered"
    audit = _audit(events)
    assert [(d.kind, d.event_id) for d in audit.divergences] == [(r.CHAIN_BREAK, 5)]


def test_an_event_the_fold_rejects_is_reported_and_later_events_are_still_checked() -> None:
    events = _history()
    bad = {**events[2], "attributes": {**events[2]["attributes"], "scheduled_event_id": 9}}
    bad["hash"] = chain.event_hash(events[1]["hash"], bad)
    events[2] = bad
    events[3]["hash"] = chain.event_hash(bad["hash"], events[3])  # the rest rechained: only the fold objects
    previous = events[3]["hash"]
    for e in events[4:]:
        e["hash"] = chain.event_hash(previous, e)
        previous = e["hash"]
    audit = _audit(events)
    assert [(d.kind, d.event_id) for d in audit.divergences] == [(r.FOLD_ERROR, 3)]
    assert audit.fold_broken and audit.next_event_id == 7


def test_replay_tracks_runs_and_the_current_run_of_a_workflow() -> None:
    replay = r.Replay()
    for e in _history():
        replay.add_record({"namespace": "default", "workflow_id": "wf-1", "run_id": "run-1", "event": e}, 1)
    for e in _history()[:2]:
        replay.add_record({"namespace": "default", "workflow_id": "wf-1", "run_id": "run-2", "event": e}, 1)
    assert replay.finish() == [] and set(replay.runs) == {"run-1", "run-2"}
    assert replay.current == {("default", "wf-1"): "run-2"} and replay.partition["run-1"] == 1


def test_compare_run_finds_a_changed_row_a_missing_row_and_a_changed_snapshot() -> None:
    events = _history()
    audit = _audit(events)
    rows = [avro.encode("HistoryEvent", e) for e in events]
    assert r.compare_run(audit, rows, audit.state.dumps()) == []

    changed = copy.deepcopy(events[4])
    changed["attributes"]["marker_name"] = "edited"
    tampered = [*rows[:4], avro.encode("HistoryEvent", changed), *rows[5:]]
    kinds = [(d.kind, d.event_id) for d in r.compare_run(audit, tampered, audit.state.dumps())]
    assert kinds == [(r.EVENT_MISMATCH, 5), (r.POSTGRES_CHAIN_BREAK, 5)]

    kinds = [(d.kind, d.event_id) for d in r.compare_run(audit, rows[:-1], audit.state.dumps())]
    assert kinds == [(r.MISSING_IN_POSTGRES, 6)]

    other_state = audit.state.clone()
    other_state.result = '"forged"'
    found = r.compare_run(audit, rows, other_state.dumps())
    assert [d.kind for d in found] == [r.STATE_MISMATCH] and "result" in found[0].detail
    assert "wf-1" in str(found[0]) and "run-1" in str(found[0])


def test_a_snapshot_of_an_earlier_build_is_compared_on_the_fields_it_has() -> None:
    events = _history()
    audit = _audit(events)
    rows = [avro.encode("HistoryEvent", e) for e in events]
    earlier = json.loads(audit.state.dumps())
    del earlier["carry_from"], earlier["last_completed_wt_ahead_id"]
    assert r.compare_run(audit, rows, json.dumps(earlier).encode()) == []
    earlier["result"] = '"forged"'
    found = r.compare_run(audit, rows, json.dumps(earlier).encode())
    assert [d.kind for d in found] == [r.STATE_MISMATCH] and "result" in found[0].detail
