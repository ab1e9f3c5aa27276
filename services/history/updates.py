"""Workflow updates: a request that workflow code validates, runs and answers.

- ``UpdateWorkflowExecution`` (a request on ``kadence.requests``) is kept in the run's
  mutable state (``MutableState.update_requests``, persisted in the snapshot, not in
  history) and a workflow task is scheduled if none is outstanding. The frontend hands the
  requests still waiting to the worker with every workflow task it hands out (read from the
  snapshot at poll time, or, for a task history in this process hands straight to a waiting
  poll, those of the commit that scheduled it: the same, read without a query), so a request
  that arrives while a task is in flight goes with the next one: after a completed task, a
  request still waiting is owed a task (``owed``).
- The worker runs the update's validator and answers with a command: ``AcceptWorkflowUpdate``
  records ``WorkflowExecutionUpdateAccepted`` (with the request's input: a replay runs the
  handler again from it); ``RejectWorkflowUpdate`` records nothing and the caller gets the
  failure; ``CompleteWorkflowUpdate`` records ``WorkflowExecutionUpdateCompleted`` with the
  handler's result or failure.
- Callers wait on the reply mechanism of every request (``reply_to``/``request_id``); each
  waiter names its stage (accepted or completed) and is answered once it is reached. A
  request naming an update id already known adds a waiter or gets the known outcome: the
  handler runs once per update id.
- Once per chain: a continue-as-new carries the update ids its run (and the runs before it)
  accepted to the new run (``MutableState.earlier_updates``, the newest
  :data:`MAX_EARLIER_UPDATES`); a request for one of them that reaches the new run is refused
  ``UpdateInEarlierRun`` naming the run that accepted it, which the frontend asks instead.
  Every outcome names the run that answered it (``run_id``), so that a caller asks that run
  from then on, as Temporal's client polls the run that accepted the update.
- Never silently dropped: a workflow task that closes the run while a request waits
  unanswered is refused (unseen.py), and when the run closes anyway (terminated, timed
  out, or closed with an accepted update still running) every waiter is answered
  ``WorkflowClosed``.

What workflow code decided (accepted and completed updates) is history and goes through
the fold (``MutableState.updates``); the requests and their waiters are live bookkeeping
only, which a rebuild from history does not know (``state.events_only`` leaves them out).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kadence_protocol.enums import CommandType, EventType, RunStatus, UpdateStage
from kadence_protocol.queries import UPDATE_RESULT_NAME
from kadence_protocol.records import Command, UpdateWorkflowExecution

from .builder import Transition
from .requests import address
from .state import MutableState, UpdateInfo, UpdateRequest, UpdateWaiter
from .summary import arrival_seq, arrived_after

if TYPE_CHECKING:
    from .engine import Context

# The workflow task commands this module turns into events (commands.py hands them here).
COMMANDS = frozenset({CommandType.ACCEPT_WORKFLOW_UPDATE, CommandType.REJECT_WORKFLOW_UPDATE,
                      CommandType.COMPLETE_WORKFLOW_UPDATE})
CLOSED = "WorkflowClosed"
NOT_FOUND = "WorkflowNotFound"
TOO_MANY = "TooManyUpdates"
NOT_HANDLED = "UpdateNotHandled"
EARLIER_RUN = "UpdateInEarlierRun"
NOT_FOUND_UPDATE = "UpdateNotFound"  # the failure type of a wait by id for an id the run does not know
# Requests waiting for the workflow at once, per run; rejected outcomes remembered per run.
MAX_WAITING = 100
MAX_REMEMBERED_REJECTIONS = 200
MAX_WAITERS = 20  # callers waiting on one update
# Update ids of earlier runs a continue-as-new carries (the newest): as many as a run remembers.
MAX_EARLIER_UPDATES = 200
# Completed workflow tasks that may leave a request unanswered before history rejects it
# itself (a worker that does not know updates would otherwise be handed it forever).
MAX_UNANSWERED_TASKS = 3


Stage = UpdateStage  # where an update stands; a caller waits for ACCEPTED or COMPLETED


async def request_update(ctx: Context, update: UpdateWorkflowExecution) -> None:
    """UpdateWorkflowExecution: keep the request for the next workflow task, or answer the
    outcome already known for its update id."""
    from .engine import target  # engine imports this module: no import cycle

    wid, uid, cmd = update.workflow_id, update.update_id, address(update)
    t = await target(ctx, update)
    if t is None:
        _error(ctx, cmd, NOT_FOUND, f"workflow {wid!r} has no run to update")
        return
    s = t.state
    wait = Stage.ACCEPTED if update.wait_for_stage == Stage.ACCEPTED else Stage.COMPLETED
    done = s.updates.get(uid)
    if done is not None and (done.completed or wait == Stage.ACCEPTED):
        _answer(ctx, cmd, s, uid, done)
        return
    req = s.update_requests.get(uid)
    if req is not None and req.stage == Stage.REJECTED and req.name == UPDATE_RESULT_NAME \
            and update.update_name != UPDATE_RESULT_NAME:
        # A wait by id alone that a worker refused (a build before this one admitted it): it
        # ran nothing, so it must not refuse the update itself, sent after it.
        del s.update_requests[uid]
        t.changed_without_events = True
        req = None
    if req is not None and req.stage == Stage.REJECTED:
        _answer_outcome(ctx, cmd, {"update_id": uid, "stage": Stage.REJECTED.value, "failure": req.failure,
                                   "run_id": s.run_id})
        return
    earlier = s.earlier_updates.get(uid) if done is None and req is None else None
    if earlier is not None:
        # Accepted by a run this one continued from: asked there, it answers its outcome;
        # admitted here, it would run a second time.
        ctx.reply(cmd, ok=False, run_id=earlier, error_type=EARLIER_RUN,
                  error_message=f"update {uid!r} of workflow {wid!r} was accepted by run {earlier}, which"
                                f" continued as new: ask that run")
        return
    if not s.running and not (done is not None and done.completed) and s.status == RunStatus.TERMINATED \
            and s.new_run_id:
        # Terminated by a reset (only a reset's termination names a new run), which gave the
        # new run this update, still running or waiting here: it answers there (reset.py).
        reset = await ctx.run(s.namespace, wid, s.new_run_id)
        if reset is not None and (uid in reset.state.updates or uid in reset.state.update_requests):
            ctx.reply(cmd, ok=False, run_id=reset.state.run_id, error_type=EARLIER_RUN,
                      error_message=f"update {uid!r} of workflow {wid!r} went with the reset of run {s.run_id} to"
                                    f" run {reset.state.run_id}: ask that run")
            return
    if not s.running:
        what = "it closed before the update completed" if done is not None else "the update was not run"
        _error(ctx, cmd, CLOSED, f"workflow {wid!r} run {s.run_id} is closed ({s.status}): {what}")
        return
    if update.update_name == UPDATE_RESULT_NAME and req is None and done is None:
        # A wait by id alone (get_update_handle) for an id this run does not know: refused
        # here, not admitted, so it never runs an update and leaves the id free for the
        # update itself, which may be sent after it (its sender and this waiter race).
        _answer_outcome(ctx, cmd, {"update_id": uid, "stage": Stage.REJECTED.value, "run_id": s.run_id,
                                   "failure": {"message": f"this run has no update {uid!r}", "type": NOT_FOUND_UPDATE,
                                               "stack_trace": "", "non_retryable": True, "details": None}})
        return
    waiter = UpdateWaiter(reply_to=update.reply_to or "", request_id=update.request_id, wait=wait.value)
    if req is None and done is None:
        if sum(1 for r in s.update_requests.values() if r.stage == Stage.REQUESTED) >= MAX_WAITING:
            _error(ctx, cmd, TOO_MANY, f"workflow {wid!r} has {MAX_WAITING} updates waiting already")
            return
        req = s.update_requests[uid] = UpdateRequest(name=update.update_name, input=update.input,
                                                     identity=update.identity, stage=Stage.REQUESTED,
                                                     seq=arrival_seq(s))
    elif req is None:  # accepted, known from history only (rebuilt): a waiter for its completion
        req = s.update_requests[uid] = UpdateRequest(name=done.name if done else "", input=None, identity="",
                                                     stage=Stage.ACCEPTED)
    if waiter.reply_to and waiter not in req.waiters:
        req.waiters.append(waiter)
        # A caller that re-asks while a long handler runs adds a waiter each time; the oldest
        # have given up (asking again is harmless: the update runs once), so few are kept.
        del req.waiters[:-MAX_WAITERS]
    t.changed_without_events = True
    if req.stage == Stage.REQUESTED and s.wt is None and s.wt_failures == 0:
        from .engine import schedule_workflow_task  # engine imports this module: no import cycle

        schedule_workflow_task(t)


def carried(s: MutableState) -> dict[str, str]:
    """The ``earlier_updates`` of the run ``s`` continues as: the update ids it accepted and
    those it was carried, by the run that accepted each (the newest kept)."""
    if not s.updates:
        return s.earlier_updates.copy()
    known = {**s.earlier_updates, **dict.fromkeys(s.updates, s.run_id)}
    return dict(list(known.items())[-MAX_EARLIER_UPDATES:])


def owed(s: MutableState) -> bool:
    """Whether a request waits that no completed workflow task answered yet."""
    return any(r.stage == Stage.REQUESTED for r in s.update_requests.values())


def unanswered(s: MutableState, commands: Iterable[Command]) -> bool:
    """Whether a request waits that ``commands`` neither accept nor reject."""
    answered = {c.attributes["update_id"] for c in commands
                if c.command_type in (CommandType.ACCEPT_WORKFLOW_UPDATE, CommandType.REJECT_WORKFLOW_UPDATE)}
    return any(r.stage == Stage.REQUESTED and uid not in answered for uid, r in s.update_requests.items())


def check_commands(s: MutableState, commands: list[Command]) -> str | None:
    """A message naming the first update command that does not follow the run's updates, or None."""
    accepted = {uid for uid, u in s.updates.items() if not u.completed}
    answered: set[str] = set()
    for i, c in enumerate(commands):
        kind = c.command_type
        if kind not in COMMANDS:
            continue
        uid = c.attributes["update_id"]
        if kind == CommandType.COMPLETE_WORKFLOW_UPDATE:
            if uid not in accepted:
                return f"commands[{i}]: update {uid!r} is not accepted, or completed already"
            accepted.discard(uid)
            continue
        req = s.update_requests.get(uid)
        if req is None or req.stage != Stage.REQUESTED or uid in answered:
            return f"commands[{i}]: update {uid!r} is not waiting for an answer"
        answered.add(uid)
        if kind == CommandType.ACCEPT_WORKFLOW_UPDATE:
            accepted.add(uid)
    return None


def task_completed(ctx: Context, t: Transition, commands: list[Command]) -> None:
    """A workflow task completed with ``commands`` (before they apply): count it against each
    request it left unanswered, and reject a request left unanswered too often."""
    answered = {c.attributes["update_id"] for c in commands if c.command_type in COMMANDS}
    # A request that came after an event this task did not bring was not handed with it (the
    # frontend keeps it for the next task): not this task's to answer.
    brought_upto = t.state.wt.scheduled_event_id if t.state.wt is not None else 0
    for uid, req in list(t.state.update_requests.items()):
        if req.stage != Stage.REQUESTED or uid in answered or arrived_after(req.seq) > brought_upto:
            continue
        req.unanswered += 1
        t.changed_without_events = True
        if req.unanswered >= MAX_UNANSWERED_TASKS:
            _reject(ctx, t, uid, {
                "message": f"{req.unanswered} workflow tasks left update {uid!r} unanswered: the workers of"
                           f" this workflow do not handle updates", "type": NOT_HANDLED, "stack_trace": "",
                "non_retryable": True, "details": None})


def apply_command(ctx: Context, t: Transition, kind: str, a: dict[str, Any], completed_id: int) -> None:
    """Add the events (if any) of one of :data:`COMMANDS` decided by the task ``completed_id``."""
    s = t.state
    uid = a["update_id"]
    t.changed_without_events = True
    if kind == CommandType.REJECT_WORKFLOW_UPDATE:
        _reject(ctx, t, uid, a["failure"])
        return
    if kind == CommandType.ACCEPT_WORKFLOW_UPDATE:
        req = s.update_requests[uid]
        t.add(EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED, update_id=uid, update_name=req.name, input=req.input,
              identity=req.identity, workflow_task_completed_event_id=completed_id)
        req.stage = Stage.ACCEPTED
        _notify(ctx, s, req, uid, s.updates[uid], Stage.ACCEPTED)
        return
    t.add(EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED, update_id=uid,
          accepted_event_id=s.updates[uid].accepted_event_id,
          result=a["result"], failure=a["failure"], workflow_task_completed_event_id=completed_id)
    if uid in s.update_requests:
        _notify(ctx, s, s.update_requests.pop(uid), uid, s.updates[uid], Stage.COMPLETED)


def after(ctx: Context, t: Transition) -> None:
    """At the end of a batch: a closed run answers every waiter ``WorkflowClosed``."""
    s = t.state
    if s.running or not s.update_requests:
        return
    for uid, req in list(s.update_requests.items()):
        if req.stage == Stage.REJECTED:
            continue
        message = (f"workflow {s.workflow_id!r} run {s.run_id} closed ({s.status}) before update {uid!r}"
                   f" {'completed' if req.stage == Stage.ACCEPTED else 'was accepted'}")
        for w in req.waiters:
            _error(ctx, _reply_cmd(s, w), CLOSED, message)
        del s.update_requests[uid]
        t.changed_without_events = True


def _reject(ctx: Context, t: Transition, uid: str, failure: dict[str, Any]) -> None:
    s = t.state
    req = s.update_requests[uid]
    req.stage = Stage.REJECTED
    req.failure = failure
    outcome = {"update_id": uid, "stage": Stage.REJECTED.value, "failure": failure, "run_id": s.run_id}
    for w in req.waiters:
        _answer_outcome(ctx, _reply_cmd(s, w), outcome)
    req.waiters = []
    req.input = None  # kept only to answer a repeat of the same update id
    rejected = [k for k, r in s.update_requests.items() if r.stage == Stage.REJECTED]
    for k in rejected[:-MAX_REMEMBERED_REJECTIONS]:
        del s.update_requests[k]


def _notify(ctx: Context, s: MutableState, req: UpdateRequest, uid: str, done: UpdateInfo,
            stage: Stage) -> None:
    """Answer the waiters whose stage is reached; keep the others."""
    keep = []
    for w in req.waiters:
        if stage == Stage.COMPLETED or w.wait == Stage.ACCEPTED:
            ctx.reply(_reply_cmd(s, w), ok=True, update_outcome=_outcome_json(s, uid, done))
        else:
            keep.append(w)
    req.waiters = keep


def _reply_cmd(s: MutableState, w: UpdateWaiter) -> dict[str, Any]:
    return {"namespace": s.namespace, "workflow_id": s.workflow_id, "reply_to": w.reply_to,
            "request_id": w.request_id}


def _answer(ctx: Context, cmd: dict[str, Any], s: MutableState, uid: str, done: UpdateInfo) -> None:
    ctx.reply(cmd, ok=True, update_outcome=_outcome_json(s, uid, done))


def _answer_outcome(ctx: Context, cmd: dict[str, Any], outcome: dict[str, Any]) -> None:
    ctx.reply(cmd, ok=True, update_outcome=json.dumps(outcome))


def _outcome_json(s: MutableState, uid: str, done: UpdateInfo) -> str:
    """The outcome as the Reply carries it, naming the run that answers (the caller's later
    asks name it: a continue-as-new does not send them to another run)."""
    if not done.completed:
        return json.dumps({"update_id": uid, "stage": Stage.ACCEPTED.value, "run_id": s.run_id})
    return json.dumps({"update_id": uid, "stage": Stage.COMPLETED.value, "result": done.result,
                       "failure": done.failure, "run_id": s.run_id})


def _error(ctx: Context, cmd: dict[str, Any], error_type: str, message: str) -> None:
    ctx.reply(cmd, ok=False, error_type=error_type, error_message=message)
