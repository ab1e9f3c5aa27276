"""The history timeline of one run: its events grouped into lanes (the run, each activity,
each timer, the signals) and laid out on a time axis for an inline SVG.

Pure functions over the event dicts the API answers (``event_id``, ``event_time`` in ms,
``event_type``, ``attributes``), so the layout is unit-tested without a server.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class LaneKind(enum.Enum):
    RUN = "run"
    ACTIVITY = "activity"
    TIMER = "timer"
    SIGNAL = "signal"
    CHILD = "child"


class Outcome(enum.Enum):
    OPEN = "open"
    OK = "ok"
    FAILED = "failed"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Mark:
    """A point on a lane: an attempt's failure, a signal, a timer firing."""

    time: int
    label: str
    failed: bool = False


@dataclass
class Lane:
    kind: LaneKind
    label: str
    start: int
    end: int | None = None  # None: still open
    outcome: Outcome = Outcome.OPEN
    marks: list[Mark] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)
    child: ChildRun | None = None  # the run a child lane stands for


@dataclass
class ChildRun:
    namespace: str
    workflow_id: str
    run_id: str = ""  # known once the child started


_CHILD_CLOSE = {"ChildWorkflowExecutionCompleted": Outcome.OK, "ChildWorkflowExecutionFailed": Outcome.FAILED,
                "ChildWorkflowExecutionTimedOut": Outcome.FAILED, "StartChildWorkflowExecutionFailed": Outcome.FAILED,
                "ChildWorkflowExecutionTerminated": Outcome.CANCELED,
                "ChildWorkflowExecutionCanceled": Outcome.CANCELED}
_RUN_CLOSE = {"WorkflowExecutionCompleted": Outcome.OK, "WorkflowExecutionFailed": Outcome.FAILED,
              "WorkflowExecutionTimedOut": Outcome.FAILED, "WorkflowExecutionTerminated": Outcome.CANCELED,
              "WorkflowExecutionContinuedAsNew": Outcome.OK}


def _attrs(event: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = event.get("attributes")
    return attributes if isinstance(attributes, Mapping) else {}


def _failure_text(failure: object) -> str:
    if isinstance(failure, Mapping):
        return f"{failure.get('type') or 'Error'}: {failure.get('message') or ''}"
    return "failed"


def lanes(events: Iterable[Mapping[str, Any]], pending_activities: Iterable[int] = ()) -> list[Lane]:
    """Group events into lanes, in order of first appearance; ``pending_activities`` are the
    scheduled event ids of activities still pending (their lane stays open across retries)."""
    pending = set(pending_activities)
    run: Lane | None = None
    signals: Lane | None = None
    by_activity: dict[int, Lane] = {}
    by_timer: dict[str, Lane] = {}
    by_child: dict[int, Lane] = {}  # by the initiated event's id
    out: list[Lane] = []
    for e in events:
        kind, a = str(e.get("event_type")), _attrs(e)
        t, eid = int(e.get("event_time") or 0), int(e.get("event_id") or 0)
        if kind == "WorkflowExecutionStarted":
            run = Lane(LaneKind.RUN, f"run {a.get('workflow_type', '')}", t, event_ids=[eid])
            out.append(run)
        elif kind in _RUN_CLOSE and run is not None:
            run.end, run.outcome = t, _RUN_CLOSE[kind]
            run.event_ids.append(eid)
        elif kind == "WorkflowExecutionSignaled":
            if signals is None:
                signals = Lane(LaneKind.SIGNAL, "signals", t, t, Outcome.OK)
                out.append(signals)
            signals.end = t
            signals.marks.append(Mark(t, str(a.get("signal_name", ""))))
            signals.event_ids.append(eid)
        elif kind == "ActivityTaskScheduled":
            lane = Lane(LaneKind.ACTIVITY, f"activity {a.get('activity_type', '')} #{a.get('activity_id', '')}", t,
                        event_ids=[eid])
            by_activity[eid] = lane
            out.append(lane)
        elif kind.startswith("ActivityTask") and int(a.get("scheduled_event_id") or 0) in by_activity:
            sid = int(a["scheduled_event_id"])
            lane = by_activity[sid]
            lane.event_ids.append(eid)
            if kind == "ActivityTaskStarted":
                lane.marks.append(Mark(t, f"attempt {a.get('attempt', '')} started"))
            elif kind == "ActivityTaskCompleted":
                lane.end, lane.outcome = t, Outcome.OK
            elif kind in ("ActivityTaskFailed", "ActivityTaskTimedOut"):
                text = _failure_text(a.get("failure")) if kind == "ActivityTaskFailed" else "timed out"
                lane.marks.append(Mark(t, text, failed=True))
                if sid not in pending:  # the last attempt: the activity failed for good
                    lane.end, lane.outcome = t, Outcome.FAILED
        elif kind == "StartChildWorkflowExecutionInitiated":
            lane = Lane(LaneKind.CHILD, f"child {a.get('workflow_type', '')} {a.get('workflow_id', '')}", t,
                        event_ids=[eid], child=ChildRun(str(a.get("namespace", "")), str(a.get("workflow_id", ""))))
            by_child[eid] = lane
            out.append(lane)
        elif (kind in _CHILD_CLOSE or kind == "ChildWorkflowExecutionStarted") \
                and int(a.get("initiated_event_id") or 0) in by_child:
            lane = by_child[int(a["initiated_event_id"])]
            lane.event_ids.append(eid)
            if a.get("run_id") and lane.child is not None:
                lane.child.run_id = str(a["run_id"])
            if kind == "ChildWorkflowExecutionStarted":
                lane.marks.append(Mark(t, "started"))
            else:
                lane.end, lane.outcome = t, _CHILD_CLOSE[kind]
                if kind == "ChildWorkflowExecutionFailed":
                    lane.marks.append(Mark(t, _failure_text(a.get("failure")), failed=True))
        elif kind == "TimerStarted":
            timer_id = str(a.get("timer_id", ""))
            # From when it counts: the code's call (start_time, decision 0013), else the event.
            start = a.get("start_time")
            lane = Lane(LaneKind.TIMER, f"timer {timer_id}", t if start is None else int(start), event_ids=[eid])
            by_timer[timer_id] = lane
            out.append(lane)
        elif kind in ("TimerFired", "TimerCanceled") and str(a.get("timer_id", "")) in by_timer:
            lane = by_timer[str(a["timer_id"])]
            lane.end = t
            lane.outcome = Outcome.OK if kind == "TimerFired" else Outcome.CANCELED
            lane.event_ids.append(eid)
    return out


@dataclass(frozen=True)
class Bar:
    """A lane placed on the SVG: x and width in pixels of the label-less plot area."""

    lane: Lane
    x: float
    width: float
    marks: tuple[tuple[float, Mark], ...]


def layout(all_lanes: Sequence[Lane], now: int, width: float = 800.0) -> tuple[list[Bar], int, int]:
    """Bars for ``all_lanes`` on one time axis from the first start to the last end (open lanes
    end at ``now``); returns the bars and the axis' start and end times."""
    if not all_lanes:
        return [], now, now
    t0 = min(lane.start for lane in all_lanes)
    t1 = max(max(lane.end if lane.end is not None else now, lane.start) for lane in all_lanes)
    span = max(t1 - t0, 1)

    def x(t: int) -> float:
        return round((t - t0) / span * width, 1)

    bars = []
    for lane in all_lanes:
        start, end = x(lane.start), x(lane.end if lane.end is not None else now)
        bars.append(Bar(lane, start, max(end - start, 2.0), tuple((x(m.time), m) for m in lane.marks)))
    return bars, t0, t1
