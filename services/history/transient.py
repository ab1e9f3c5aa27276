"""A failing workflow task's later attempts stay out of history (Temporal's transient
workflow task), so a workflow whose code keeps failing does not grow its history.

The first failed attempt of a streak is recorded as ever (WorkflowTaskScheduled, Started,
Failed or TimedOut). Each attempt after it is *transient*: scheduled without an event at
the id its WorkflowTaskScheduled would take (``state.schedule_transient``), its start and
failure kept in mutable state only (the snapshot makes them durable; describe shows the
attempt and its last failure). Its worker is handed the WorkflowTaskScheduled it would
have (:func:`carried`), so workflow code runs exactly as it will replay.

The events are written when the attempt completes, or as soon as any other event is
written while it is outstanding (:func:`materialize`, called by the builder): a signal, an
activity result, a terminate. The reserved ids stay right because nothing else is written
while the attempt is outstanding, and the written WorkflowTaskScheduled carries the attempt
number, from which the fold takes the count of failed attempts back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kadence_protocol.enums import EventType
from services.common import chain

from .builder import event_attributes
from .state import Event

if TYPE_CHECKING:
    from .builder import Tail, Transition


def _scheduled_attributes(t: Transition) -> dict[str, object]:
    s = t.state
    assert s.wt is not None
    # Nothing is written while a transient task is outstanding: the history's size and
    # limits are those its WorkflowTaskScheduled sees when written.
    return {"task_queue": s.task_queue, "start_to_close_timeout_ms": s.workflow_task_timeout_ms,
            "attempt": s.wt.attempt, "history_size_bytes": s.history_size_bytes,
            "suggest_continue_as_new": t.history_limits.suggests_continue_as_new(s)}


def carried(t: Transition) -> Tail:
    """The event a transient task's worker is handed: its WorkflowTaskScheduled, as it will
    be written if the task completes (the worker reads the events before it from the store)."""
    s = t.state
    assert s.wt is not None and s.wt.transient
    event: Event = {
        "event_id": s.wt.scheduled_event_id, "event_time": s.wt.scheduled_time,
        "event_type": EventType.WORKFLOW_TASK_SCHEDULED.value,
        "attributes": event_attributes(EventType.WORKFLOW_TASK_SCHEDULED, _scheduled_attributes(t)),
    }
    event["hash"], encoded = chain.seal(s.last_hash, event)
    return [(s.wt.scheduled_event_id, encoded, event)]


def materialize(t: Transition) -> None:
    """Write the outstanding transient task's WorkflowTaskScheduled (and WorkflowTaskStarted
    if a worker has it) at their reserved ids: it completes, or another event follows it."""
    s = t.state
    wt = s.wt
    if wt is None or not wt.transient:
        return
    attributes = _scheduled_attributes(t)
    s.wt = None  # the events below make it history's task
    scheduled = t.add(EventType.WORKFLOW_TASK_SCHEDULED, **attributes)
    assert scheduled["event_id"] == wt.scheduled_event_id, "an event was written over a transient workflow task"
    if wt.started_event_id:
        t.add(EventType.WORKFLOW_TASK_STARTED, scheduled_event_id=wt.scheduled_event_id, identity=wt.identity,
              started_time=wt.handed_time)
