"""Reset: a new run of a workflow that goes on from one of an old run's workflow tasks.

The classic repair after a bad deploy (Temporal's ``ResetWorkflowExecution``): a run
stuck failing its workflow task because the code changed under it is reset to a task
before the change, and a worker runs it on with the current code.

``ResetWorkflowExecution`` (a command on ``kadence.requests``) makes, in one transition
of each run and in the batch's one transaction:

* a **new run** (same workflow id, a new run id) whose history is a copy of the old run's
  events up to the chosen task's ``WorkflowTaskStarted`` (same ids, types, times and
  attributes, sealed on the new run's own hash chain), then ``WorkflowTaskFailed`` with
  cause ``ResetWorkflow`` naming both runs (``base_run_id``, ``new_run_id``), then, unless
  asked not to, the signals the old run recorded after that point again (same request
  ids, so none is taken twice), then a new ``WorkflowTaskScheduled``; the old run's
  unfinished update requests move to it with their callers. A worker replays the
  copy with its current code and carries on from the failed task. Timers and activities
  pending at that point are armed and dispatched again in the new run;
* the **old run**, if still open, ``WorkflowExecutionTerminated`` with a reason naming
  the new run and ``new_run_id``, which result waits follow (as continue-as-new); so is
  the workflow's current run when an earlier run is reset while a later one is open (a
  workflow has one open run).

The reply names the new run. The command is a workflow command of the ledger: the same
request id, delivered again, is answered with the same new run and applies nothing;
the new run id is also derived from the old run and the request id.

Refused (reply ``InvalidResetPoint``, HTTP 400, nothing written): a reset point that is
not an event of a workflow task of the run, a run with no such task yet, and runs whose
reset would have to re-link other runs: a child workflow, or a run with child workflows
or signals to other workflows pending at the reset point (not supported yet).
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple, Protocol, runtime_checkable

from kadence_protocol.reset import INVALID_RESET, RESET_CAUSE, RESET_EVENT_TYPES, ResetPoint

from . import engine, run_ids, updates
from .builder import Transition
from .state import Event, MutableState, UpdateRequest, apply


@runtime_checkable
class ResetContext(engine.Context, Protocol):
    """What a reset needs of the batch beyond other operations (context.BatchContext)."""

    async def run_events(self, run_id: str) -> list[tuple[Event, int]]: ...

    def became_current(self, state: MutableState) -> None: ...


class InvalidReset(ValueError):
    """The reset cannot be made as asked; the message says why."""


class Point(NamedTuple):
    """Where a reset cuts a run's history: after the chosen task's WorkflowTaskStarted."""

    started_event_id: int
    scheduled_event_id: int


def choose_point(events: list[Event], point: ResetPoint, event_id: int, run_id: str) -> Point:
    """The workflow task ``point`` / ``event_id`` names in a run of ``events``."""
    started: int | None = None
    if point is ResetPoint.FIRST:
        started = next((e["event_id"] for e in events if e["event_type"] == "WorkflowTaskStarted"), None)
        if started is None:
            raise InvalidReset(f"run {run_id} has no workflow task started yet: nothing to reset to")
    elif point is ResetPoint.LAST:
        completed = [e for e in events if e["event_type"] == "WorkflowTaskCompleted"]
        if not completed:
            raise InvalidReset(f"run {run_id} has completed no workflow task yet: reset to 'first' instead")
        started = int(completed[-1]["attributes"]["started_event_id"])
    else:
        if not 1 <= event_id <= len(events):
            raise InvalidReset(f"run {run_id} has events 1 to {len(events)}: there is no event {event_id}")
        e = events[event_id - 1]
        if e["event_type"] not in RESET_EVENT_TYPES:
            raise InvalidReset(f"event {event_id} of run {run_id} is {e['event_type']}: reset to an event of a"
                               f" workflow task ({', '.join(RESET_EVENT_TYPES)})")
        started = event_id if e["event_type"] == "WorkflowTaskStarted" else int(e["attributes"]["started_event_id"])
        if not started:
            raise InvalidReset(f"event {event_id} of run {run_id} ends a workflow task no worker started:"
                               " reset to a task that was started")
    scheduled = int(events[started - 1]["attributes"]["scheduled_event_id"])
    return Point(started, scheduled)


def new_run_id(base_run_id: str, request_id: str) -> str:
    """The new run's id: fixed by the request, so a copy of it never makes a second run."""
    if not request_id:
        return run_ids.new_run_id()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kadence:reset:{base_run_id}:{request_id}").hex


async def reset_workflow(ctx: engine.Context, cmd: dict[str, Any]) -> None:
    """ResetWorkflowExecution: see the module doc."""
    if not isinstance(ctx, ResetContext):
        raise TypeError("a reset runs in a shard batch (context.BatchContext)")
    ns, wid = cmd["namespace"], cmd["workflow_id"]
    base = await (ctx.run(ns, wid, cmd["run_id"]) if cmd.get("run_id") else ctx.current_run(ns, wid))
    if base is None:
        ctx.reply(cmd, ok=False, error_type="WorkflowNotFound",
                  error_message=f"workflow {wid!r} has no run {cmd['run_id']!r}" if cmd.get("run_id")
                  else f"workflow {wid!r} has no run to reset")
        return
    events = await ctx.run_events(base.state.run_id)
    # Loaded before the new run is made: the batch writes runs in the order it loaded them,
    # and the new run, written last, must be the one current_executions ends up naming.
    current = await ctx.current_run(ns, wid)
    try:
        point = choose_point([e for e, _ in events], ResetPoint(cmd["reset_point"]), cmd["event_id"],
                             base.state.run_id)
        new = _copy(ctx, base.state, events, point, cmd)
    except InvalidReset as exc:
        ctx.reply(cmd, ok=False, run_id=base.state.run_id, error_type=INVALID_RESET, error_message=str(exc))
        return
    if cmd["reapply_signals"]:
        _carry_updates(base, new, [e for e, _ in events[point.started_event_id:]])
    # A workflow has one open run: the old run if open, and the current run if another (a
    # reset of an earlier run), are terminated naming the new one.
    for t in (base, current):
        if t is not None and t is not new and t.state.running:
            t.add("WorkflowExecutionTerminated", reason=_reason(f"reset to run {new.state.run_id}", cmd["reason"]),
                  identity=cmd["identity"], new_run_id=new.state.run_id)
            engine.settle(t)
    ctx.became_current(new.state)
    ctx.reply(cmd, ok=True, run_id=new.state.run_id, created=True)


def _reason(what: str, reason: str) -> str:
    return f"{what}: {reason}" if reason else what


def _copy(ctx: ResetContext, base: MutableState, events: list[tuple[Event, int]], point: Point,
          cmd: dict[str, Any]) -> Transition:
    """The new run: the copied history, the failed task, the signals again, a new task."""
    if base.parent is not None:
        raise InvalidReset(f"run {base.run_id} is a child workflow: resetting a child is not supported yet")
    # The fold of the copy, checked before anything is added to the batch.
    probe = MutableState(namespace=base.namespace, workflow_id=base.workflow_id, run_id=base.run_id)
    for e, size in events[:point.started_event_id]:
        apply(probe, e, size)
    if probe.children or probe.signals_out:
        raise InvalidReset(f"run {base.run_id} has child workflows or signals to other workflows pending at event"
                           f" {point.started_event_id}: resetting across them is not supported yet")
    run_id = new_run_id(base.run_id, cmd["request_id"])
    t = ctx.new_run(MutableState(namespace=base.namespace, workflow_id=base.workflow_id, run_id=run_id))
    t.current_changed = True
    for e, _ in events[:point.started_event_id]:
        t.copy(e)
    s = t.state
    t.add("WorkflowTaskFailed", scheduled_event_id=point.scheduled_event_id, started_event_id=point.started_event_id,
          cause=RESET_CAUSE, identity=cmd["identity"], base_run_id=base.run_id, new_run_id=run_id,
          failure={"message": _reason(f"reset from run {base.run_id} at event {point.started_event_id}",
                                      cmd["reason"]),
                   "type": RESET_CAUSE, "stack_trace": "", "non_retryable": True, "details": None})
    if cmd["reapply_signals"]:
        for e, _ in events[point.started_event_id:]:
            if e["event_type"] == "WorkflowExecutionSignaled":
                a = e["attributes"]
                t.add("WorkflowExecutionSignaled", signal_name=a["signal_name"], input=a["input"],
                      identity=a["identity"], request_id=a["request_id"])
    _rearm(ctx, t)
    timeout_at = s.timeout_at()
    if 0 < timeout_at < engine.NEVER_MS:
        t.set_timer("wf_timeout", 0, timeout_at)
    engine.schedule_workflow_task(t)
    return t


def _carry_updates(base: Transition, new: Transition, after: list[Event]) -> None:
    """Give the new run the update requests the old one has not finished: those still
    waiting for a worker, and those accepted after the reset point but not completed (their
    input is in the accepted event), with their callers, who then get the new run's answer
    instead of WorkflowClosed; and the callers of those accepted before the point and not
    completed, which the new run's copy holds accepted. Updates completed after the point
    are not run again."""
    old, s = base.state, new.state
    s.earlier_updates = old.earlier_updates.copy()  # the runs the old one continued from
    accepted = {e["attributes"]["update_id"]: e["attributes"] for e in after
                if e["event_type"] == "WorkflowExecutionUpdateAccepted"}
    seq = 0
    for uid, req in sorted(old.update_requests.items(), key=lambda kv: kv[1].seq):
        running = old.updates.get(uid)
        if req.stage == updates.Stage.REQUESTED:
            name, input_, identity = req.name, req.input, req.identity
        elif (req.stage == updates.Stage.ACCEPTED and uid in accepted and running is not None
              and not running.completed):
            name, input_, identity = (accepted[uid]["update_name"], accepted[uid]["input"],
                                      accepted[uid]["identity"])
        elif req.stage == updates.Stage.ACCEPTED and uid in s.updates and not s.updates[uid].completed:
            # Accepted before the point: in the copy, so its handler runs again in the new run;
            # its callers wait there (else the old run's close answers them WorkflowClosed).
            s.update_requests[uid] = UpdateRequest(name=s.updates[uid].name, input=None, identity="",
                                                   stage=updates.Stage.ACCEPTED, waiters=req.waiters)
            del old.update_requests[uid]
            base.changed_without_events = True
            continue
        else:
            continue
        seq += 1
        s.update_requests[uid] = UpdateRequest(name=name, input=input_, identity=identity,
                                               stage=updates.Stage.REQUESTED, waiters=req.waiters, seq=seq)
        del old.update_requests[uid]
        base.changed_without_events = True


def _rearm(ctx: ResetContext, t: Transition) -> None:
    """Arm the timers and dispatch the activities pending at the reset point, in the new run
    (their timer rows and tasks belonged to the old one). An activity starts over at its
    attempt 1 (the old run's attempts were not history), its timeouts counted from now."""
    s = t.state
    for timer_id, timer in s.timers.items():
        t.set_timer("user_timer", timer_id, timer.fire_at, ref=timer.started_event_id)
    for key, act in list(s.activities.items()):
        sid = int(key)
        if act.cancel_requested_event_id:
            # Asked to cancel before the reset point and not heard of since: canceled now.
            t.add("ActivityTaskCanceled", scheduled_event_id=sid, started_event_id=0,
                  latest_cancel_requested_event_id=act.cancel_requested_event_id, details=None, identity="")
            continue
        t.dispatch_activity_task(sid)
        if act.schedule_to_close_timeout_ms > 0:
            t.set_timer("act_s2c", sid, ctx.now + act.schedule_to_close_timeout_ms)
        if act.schedule_to_start_timeout_ms > 0:
            t.set_timer("act_s2s", sid, ctx.now + act.schedule_to_start_timeout_ms, act.attempt)
