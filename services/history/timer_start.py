"""When a user timer counts from: the workflow code's call, clamped by history.

The SDK reads its wall clock when workflow code calls ``sleep`` (or starts a timer) and
sends it as the StartTimer command's ``requested_time``. History counts the timer from
that time, clamped into [the workflow task's floor, the batch's time]: a worker clock
ahead never starts a timer in the future, and a clock behind (or a lying worker) never
starts it before the task existed. What it used is recorded in TimerStarted's
``start_time``; the fold (``state.py``) fires the timer at that time (or, when null, the
event's time) plus the duration. See docs/decisions/0013-timers-from-the-call.md.
"""

from __future__ import annotations

from .state import WorkflowTaskInfo


def task_floor(wt: WorkflowTaskInfo) -> int:
    """The earliest time a timer started by the task ``wt`` may count from.

    A task handed out: its scheduled time. A task a worker ran ahead (on an activity's
    result, before history scheduled it): its ``workflow.now()``, which history accepted
    (no earlier than the activity's schedule, no later than history's clock); its
    scheduled event is only written when the answer arrives.
    """
    return wt.handed_time if wt.ran_ahead_id else wt.scheduled_time


def start_time(requested: int | None, floor: int, now: int) -> int | None:
    """The time a timer counts from, ``requested`` clamped into [``floor``, ``now``];
    None (from the TimerStarted event's time) when the command carried none."""
    if requested is None:
        return None
    return max(min(floor, now), min(requested, now))
