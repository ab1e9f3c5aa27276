"""The run page's timeline: events grouped into lanes and laid out on one time axis."""

from __future__ import annotations

from typing import Any

from services.frontend.ui.timeline import LaneKind, Outcome, lanes, layout


def ev(eid: int, t: int, kind: str, **attributes: Any) -> dict[str, Any]:
    return {"event_id": eid, "event_time": t, "event_type": kind, "attributes": attributes}


HISTORY = [
    ev(1, 1000, "WorkflowExecutionStarted", workflow_type="Order"),
    ev(2, 1000, "WorkflowTaskScheduled"),
    ev(5, 1100, "ActivityTaskScheduled", activity_id="1", activity_type="charge"),
    ev(6, 1200, "ActivityTaskStarted", scheduled_event_id=5, attempt=1),
    ev(7, 1300, "ActivityTaskFailed", scheduled_event_id=5, failure={"type": "ValueError", "message": "declined"}),
    ev(8, 1400, "TimerStarted", timer_id="t1"),
    ev(9, 1500, "WorkflowExecutionSignaled", signal_name="approve"),
    ev(10, 1900, "TimerFired", timer_id="t1"),
    ev(11, 2000, "WorkflowExecutionFailed", failure={"type": "ActivityError", "message": "x"}),
]


def test_events_are_grouped_by_run_activity_timer_and_signal() -> None:
    got = lanes(HISTORY)
    assert [lane.kind for lane in got] == [LaneKind.RUN, LaneKind.ACTIVITY, LaneKind.TIMER, LaneKind.SIGNAL]
    run, activity, timer, signals = got
    assert (run.start, run.end, run.outcome) == (1000, 2000, Outcome.FAILED)
    assert (activity.start, activity.end, activity.outcome) == (1100, 1300, Outcome.FAILED)
    assert [m.label for m in activity.marks] == ["attempt 1 started", "ValueError: declined"]
    assert activity.marks[1].failed and activity.event_ids == [5, 6, 7]
    assert (timer.start, timer.end, timer.outcome) == (1400, 1900, Outcome.OK)
    assert [m.label for m in signals.marks] == ["approve"]


def test_a_timer_lane_starts_when_the_timer_counts_from() -> None:
    """A timer recorded with the code's call time (TimerStarted.start_time) is drawn from it."""
    history = [ev(1, 1000, "WorkflowExecutionStarted", workflow_type="T"),
               ev(5, 1400, "TimerStarted", timer_id="t1", start_time=1385),
               ev(6, 1885, "TimerFired", timer_id="t1")]
    timer = lanes(history)[1]
    assert (timer.kind, timer.start, timer.end) == (LaneKind.TIMER, 1385, 1885)


def test_a_failed_attempt_of_a_pending_activity_leaves_its_lane_open() -> None:
    activity = lanes(HISTORY[:5], pending_activities=[5])[1]
    assert activity.end is None and activity.outcome is Outcome.OPEN


def test_layout_places_bars_on_one_axis_and_open_lanes_end_now() -> None:
    bars, t0, t1 = layout(lanes(HISTORY[:5], pending_activities=[5]), now=3000, width=1000)
    assert (t0, t1) == (1000, 3000)
    run, activity = bars
    assert (run.x, run.width) == (0.0, 1000.0)
    assert (activity.x, activity.width) == (50.0, 950.0)
    assert [x for x, _ in activity.marks] == [100.0, 150.0]


def test_no_events_lay_out_nothing() -> None:
    assert layout([], now=5) == ([], 5, 5)


def test_a_child_lane_knows_its_run_and_closes_with_the_child() -> None:
    events = [
        ev(1, 1000, "WorkflowExecutionStarted", workflow_type="Parent"),
        ev(5, 1100, "StartChildWorkflowExecutionInitiated", namespace="default", workflow_id="kid", workflow_type="Kid"),
        ev(6, 1200, "ChildWorkflowExecutionStarted", initiated_event_id=5, workflow_id="kid", run_id="r9"),
        ev(9, 1500, "ChildWorkflowExecutionFailed", initiated_event_id=5, run_id="r9",
           failure={"type": "ValueError", "message": "no"}),
    ]
    child = lanes(events)[1]
    assert child.kind is LaneKind.CHILD and (child.end, child.outcome) == (1500, Outcome.FAILED)
    assert child.child is not None and (child.child.workflow_id, child.child.run_id) == ("kid", "r9")
    assert [m.label for m in child.marks] == ["started", "ValueError: no"]
