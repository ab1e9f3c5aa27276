"""The decisions of a completed workflow task, turned into history events."""

from __future__ import annotations

from typing import Any

from kadence_protocol.enums import CommandType, EventType, TimerKind
from kadence_protocol.records import Command

from . import cancellation, children, retry, run_ids, timer_start, updates
from .builder import Transition
from .engine import Context, _new_run, schedule_workflow_task
from .state import MutableState


def validate_commands(commands: list[Command]) -> str | None:
    """A message naming the first command history cannot accept, or None."""
    timers: set[str] = set()
    for i, c in enumerate(commands):
        a = c.attributes
        kind = c.command_type
        if kind == CommandType.SCHEDULE_ACTIVITY_TASK:
            if not a["activity_type"]:
                return f"commands[{i}]: activity_type is empty"
            if a["start_to_close_timeout_ms"] <= 0 and a["schedule_to_close_timeout_ms"] <= 0:
                return f"commands[{i}]: an activity needs start_to_close_timeout or schedule_to_close_timeout"
        elif kind == CommandType.START_TIMER:
            if a["start_to_fire_timeout_ms"] < 0:
                return f"commands[{i}]: start_to_fire_timeout_ms is negative"
            if a["timer_id"] in timers:
                return f"commands[{i}]: timer_id {a['timer_id']!r} is used twice"
            timers.add(a["timer_id"])
        elif kind in children.COMMANDS:
            problem = children.validate(i, kind, a)
            if problem is not None:
                return problem
    return None


def clashes(s: MutableState, commands: list[Command]) -> str | None:
    """A message naming the first command whose activity id a pending activity (or an
    earlier command of the task) has, or whose timer id a pending timer has, else None. As
    in Temporal: an activity is addressed by its id (an async completion by ids, describe),
    and a timer by its id (CancelTimer), so two pending at once would be one address."""
    activity_ids: set[str] | None = None  # built at the first activity: most tasks schedule none
    for i, c in enumerate(commands):
        a = c.attributes
        if c.command_type == CommandType.SCHEDULE_ACTIVITY_TASK:
            if activity_ids is None:
                activity_ids = {x.activity_id for x in s.activities.values()}
            if a["activity_id"] in activity_ids:
                return f"commands[{i}]: activity_id {a['activity_id']!r} is in use by a pending activity"
            activity_ids.add(a["activity_id"])
        elif c.command_type == CommandType.START_TIMER and a["timer_id"] in s.timers:
            return f"commands[{i}]: timer_id {a['timer_id']!r} is in use by a pending timer"
    return None


def apply_commands(ctx: Context, t: Transition, commands: list[Command], completed_id: int,
                   timer_floor: int, timer_grace_ms: int = 0) -> None:
    """Add the events of a completed workflow task's commands.

    A user timer runs from when the workflow code called ``sleep(d)`` by the worker's clock
    (the command's ``requested_time``), clamped into [``timer_floor``, the batch's time]
    (``timer_start.py``); without a requested time, from when history records it. Either
    way the timer never wakes the code before ``d`` of wall time has passed since the call
    (on one clock). ``timer_grace_ms``: how long past its fire time history holds a user
    timer's own firing, for the worker that runs it ahead (timer_ahead.py); the run's state
    keeps the fire time itself.
    """
    for c in commands:
        if not t.state.running:
            break  # nothing follows a closing command
        a = c.attributes
        kind = c.command_type
        if kind == CommandType.SCHEDULE_ACTIVITY_TASK:
            _schedule_activity(ctx, t, a, completed_id)
        elif kind == CommandType.START_TIMER:
            start = timer_start.start_time(a.get("requested_time"), timer_floor, ctx.now)
            ev = t.add(EventType.TIMER_STARTED, timer_id=a["timer_id"],
                       start_to_fire_timeout_ms=a["start_to_fire_timeout_ms"],
                       workflow_task_completed_event_id=completed_id, start_time=start)
            # ref is the TimerStarted event id: a fired row matches only this timer. The fold
            # computed when it fires (from start_time, else the event's time).
            t.set_timer(TimerKind.USER_TIMER, a["timer_id"], t.state.timers[a["timer_id"]].fire_at + timer_grace_ms,
                        ref=ev["event_id"])
        elif kind == CommandType.CANCEL_TIMER:
            pending = t.state.timers.get(a["timer_id"])
            if pending is not None:
                t.add(EventType.TIMER_CANCELED, timer_id=a["timer_id"], started_event_id=pending.started_event_id,
                      workflow_task_completed_event_id=completed_id)
                t.delete_timer(TimerKind.USER_TIMER, a["timer_id"])
        elif kind == CommandType.RECORD_MARKER:
            t.add(EventType.MARKER_RECORDED, marker_name=a["marker_name"], details=a["details"],
                  workflow_task_completed_event_id=completed_id)
        elif kind == CommandType.COMPLETE_WORKFLOW_EXECUTION:
            t.add(EventType.WORKFLOW_EXECUTION_COMPLETED, result=a["result"],
                  workflow_task_completed_event_id=completed_id)
        elif kind == CommandType.FAIL_WORKFLOW_EXECUTION:
            retry.fail(ctx, t, a["failure"], completed_id)  # retried as a new run if the policy says so
        elif kind == CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION:
            _continue_as_new(ctx, t, a, completed_id)
        elif kind in cancellation.COMMANDS:
            cancellation.apply_command(ctx, t, kind, a, completed_id)
        elif kind in updates.COMMANDS:
            updates.apply_command(ctx, t, kind, a, completed_id)
        elif kind in children.COMMANDS:
            children.apply_command(t, kind, a, completed_id)


def _schedule_activity(ctx: Context, t: Transition, a: dict[str, Any], completed_id: int) -> None:
    s2c = a["schedule_to_close_timeout_ms"]
    stc = a["start_to_close_timeout_ms"] if a["start_to_close_timeout_ms"] > 0 else s2c
    ev = t.add(EventType.ACTIVITY_TASK_SCHEDULED, activity_id=a["activity_id"], activity_type=a["activity_type"],
               task_queue=a["task_queue"] or t.state.task_queue, input=a["input"],
               schedule_to_close_timeout_ms=s2c, schedule_to_start_timeout_ms=a["schedule_to_start_timeout_ms"],
               start_to_close_timeout_ms=stc, heartbeat_timeout_ms=a["heartbeat_timeout_ms"],
               retry_policy=a["retry_policy"], workflow_task_completed_event_id=completed_id)
    sid = ev["event_id"]
    t.dispatch_activity_task(sid)
    if s2c > 0:
        t.set_timer(TimerKind.ACTIVITY_SCHEDULE_TO_CLOSE, sid, ctx.now + s2c)
    if a["schedule_to_start_timeout_ms"] > 0:
        t.set_timer(TimerKind.ACTIVITY_SCHEDULE_TO_START, sid, ctx.now + a["schedule_to_start_timeout_ms"], 1)


def _continue_as_new(ctx: Context, t: Transition, a: dict[str, Any], completed_id: int) -> None:
    s = t.state
    new_run_id = run_ids.new_run_id()
    workflow_type = a["workflow_type"] or s.workflow_type
    task_queue = a["task_queue"] or s.task_queue
    t.add(EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW, new_run_id=new_run_id, workflow_type=workflow_type,
          task_queue=task_queue, input=a["input"], workflow_task_completed_event_id=completed_id)
    new = _new_run(ctx, s.namespace, s.workflow_id, workflow_type, task_queue, a["input"],
                   execution_timeout_ms=s.execution_timeout_ms, workflow_task_timeout_ms=s.workflow_task_timeout_ms,
                   run_timeout_ms=s.run_timeout_ms, execution_expiration_time=s.execution_expiration_time,
                   request_id="", identity="", continued_from=s.run_id, run_id=new_run_id,
                   memo=s.memo if a.get("memo") is None else a["memo"],  # carried over unless replaced
                   search_attributes=a.get("search_attributes"),  # only those given (Command v6)
                   parent=children.parent_attributes(s.parent),
                   retry=retry.started_attributes(s.retry_policy))  # the policy carries on, from attempt 1
    new.state.earlier_updates = updates.carried(s)  # an update id runs once per chain
    schedule_workflow_task(new)
