"""Cancellation: of a workflow run (asked from outside), and of its activities (asked by
workflow code).

- ``RequestCancelWorkflowExecution`` (a command on ``kadence.requests``) records
  ``WorkflowExecutionCancelRequested`` and schedules a workflow task; the SDK delivers it to
  workflow code as ``asyncio.CancelledError``. Repeated with the same request id, or when a
  cancel is already recorded, it changes nothing and answers ok; a closed run is refused
  as not found (``WorkflowNotFound``, the message saying how it closed), as over HTTP
  (decision 0022), so a Kafka producer's reply or dead letter names what HTTP answers.
- The ``CancelWorkflowExecution`` command closes the run as ``Canceled``
  (``WorkflowExecutionCanceled``).
- The ``RequestCancelActivityTask`` command records ``ActivityTaskCancelRequested``; an
  activity with no attempt running is canceled at once (``ActivityTaskCanceled``), a
  running one learns of it from its next heartbeat answer and reports
  ``RespondActivityTaskCanceled``.

The operations add events to a Transition like those of engine.py; the shard registers
them in its HANDLERS and commands.py hands the two commands here.
"""

from __future__ import annotations

from typing import Any

from kadence_protocol.enums import ActivityState, CommandType, EventType
from kadence_protocol.records import (
    Failure,
    RequestCancelWorkflowExecution,
    RespondActivityTaskCanceled,
    RespondActivityTaskFailed,
)

from . import engine
from .builder import Transition
from .engine import Context, settle
from .requests import address

# The workflow task commands this module turns into events (commands.py hands them here).
COMMANDS = frozenset({CommandType.REQUEST_CANCEL_ACTIVITY_TASK, CommandType.CANCEL_WORKFLOW_EXECUTION})
# A closed run's refusal; builds before decision 0022's follow-up said WorkflowAlreadyClosed,
# which the frontend still maps to the same 404 for a history not yet upgraded.
CLOSED = "WorkflowNotFound"
# The failure type of an attempt that reported itself canceled when no cancel was requested.
UNASKED = "ActivityCanceledUnasked"


async def request_cancel_workflow(ctx: Context, req: RequestCancelWorkflowExecution) -> None:
    """RequestCancelWorkflowExecution: record the request on the open run, once."""
    wid, reply_to = req.workflow_id, address(req)
    t = await engine.target(ctx, req)
    if t is None:
        ctx.reply(reply_to, ok=False, error_type="WorkflowNotFound",
                  error_message=f"workflow {wid!r} has no run to cancel")
        return
    s = t.state
    if req.request_id and s.cancel_request_id == req.request_id:
        ctx.reply(reply_to, ok=True, run_id=s.run_id)  # a retry of a cancel already recorded
        return
    if not s.running:
        ctx.reply(reply_to, ok=False, run_id=s.run_id, error_type=CLOSED,
                  error_message=f"workflow {wid!r} run {s.run_id} is already closed ({s.status}): nothing to cancel")
        return
    if not s.cancel_requested:  # a second request adds nothing: the workflow was told once
        t.add(EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED, reason=req.reason, identity=req.identity,
              request_id=req.request_id)
        settle(t)
    ctx.reply(reply_to, ok=True, run_id=s.run_id)


def apply_command(ctx: Context, t: Transition, kind: str, a: dict[str, Any], completed_id: int) -> None:
    """Add the events of one of :data:`COMMANDS` decided by the workflow task ``completed_id``."""
    if kind == CommandType.CANCEL_WORKFLOW_EXECUTION:
        t.add(EventType.WORKFLOW_EXECUTION_CANCELED, details=a["details"],
              workflow_task_completed_event_id=completed_id)
        return
    sid = a["scheduled_event_id"]
    # Recorded even when the activity finished after the task was handed out, so that a
    # replay finds an event for every command; the fold then changes nothing.
    requested = t.add(EventType.ACTIVITY_TASK_CANCEL_REQUESTED, scheduled_event_id=sid,
                      workflow_task_completed_event_id=completed_id)
    act = t.state.activities.get(str(sid))
    if act is not None and act.state == ActivityState.SCHEDULED:
        # No attempt runs (not handed out yet, or waiting out a retry backoff): canceled now.
        # A worker that picks the task up later finds it gone.
        t.add(EventType.ACTIVITY_TASK_CANCELED, scheduled_event_id=sid, started_event_id=0,
              latest_cancel_requested_event_id=requested["event_id"], details=None, identity="")
        _drop_activity_timers(t, sid)


async def activity_canceled(ctx: Context, req: RespondActivityTaskCanceled) -> None:
    """RespondActivityTaskCanceled: the attempt stopped on the cancel request it was told of.

    An attempt that says so unasked (no cancel was requested) is recorded as its failure.
    """
    answered = await engine._answered_activity(ctx, req)  # implies the start if it was not recorded
    if answered is None:
        return  # stale: the attempt is over
    t, act = answered
    if not act.cancel_requested_event_id:
        failure = Failure(message="the activity reported itself canceled, but no cancel was requested",
                          type=UNASKED, details=req.details)
        await engine.activity_failed(ctx, RespondActivityTaskFailed(  # retried as its policy says
            namespace=req.namespace, workflow_id=req.workflow_id, run_id=req.run_id,
            scheduled_event_id=req.scheduled_event_id, attempt=req.attempt, identity=req.identity,
            failure=failure))
        return
    sid = req.scheduled_event_id
    # The attempt's ActivityTaskStarted is written only now that it ends the activity.
    t.add(EventType.ACTIVITY_TASK_CANCELED, scheduled_event_id=sid,
          started_event_id=engine._record_started(t, sid, act),
          latest_cancel_requested_event_id=act.cancel_requested_event_id, details=req.details,
          identity=req.identity)
    _drop_activity_timers(t, sid)
    settle(t)


def _drop_activity_timers(t: Transition, sid: int) -> None:
    for kind in engine.ACTIVITY_TIMERS:
        t.delete_timer(kind, sid)
