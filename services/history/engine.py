"""One operation per command or timer: load the run, decide, add events.

Handlers never write to the database or Kafka themselves: they add events and
side effects to a :class:`~.builder.Transition` that the shard loop commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kadence_protocol.enums import (
    ACTIVITY_TIMER_KINDS,
    ActivityState,
    EventType,
    TimeoutType,
    TimerKind,
    WorkflowTaskFailedCause,
)
from kadence_protocol.records import (
    Command,
    RecordActivityTaskHeartbeat,
    RecordActivityTaskStarted,
    RecordWorkflowTaskStarted,
    RespondActivityTaskCanceled,
    RespondActivityTaskCompleted,
    RespondActivityTaskFailed,
    RespondWorkflowTaskCompleted,
    RespondWorkflowTaskFailed,
    RunAheadWorkflowTask,
    SignalWithStartWorkflowExecution,
    SignalWorkflowExecution,
    StartWorkflowExecution,
    TerminateWorkflowExecution,
)
from kadence_protocol.retry import DEFAULT_RETRY, next_backoff

from . import policies, run_ids, timer_start, transient, unseen, updates
from .builder import Transition
from .limits import LIMIT_IDENTITY
from .requests import Targeted, address
from .state import (
    TASK_TIMED_OUT,
    ActivityInfo,
    Event,
    MutableState,
    WorkflowTaskInfo,
    fail_transient,
    retry_attempt,
    schedule_transient,
    start_attempt,
    start_transient,
)

ACTIVITY_TIMERS = ACTIVITY_TIMER_KINDS
# A deadline this far out (about 146 million years) is never: no timer is armed for it,
# and a chain's expiration saturates here rather than overflow a bigint.
NEVER_MS = 2**62
# A failing workflow task's retries back off from 1 s, doubling, up to 10 minutes
# (Temporal's cap): the second attempt follows the first failure at once.
MAX_WT_BACKOFF_MS = 600_000
# How many graces past its row a timer run ahead (decision 0014), held while its shard is
# behind (decision 0017), also waits for the requests that reach the shard meanwhile: a
# burst's tasks reach a loaded shard seconds after the row came due.
RECHECK_GRACES = 3
# How many graces past its row such a firing is held at most, whatever the shard still has
# to take: a request that never reaches the shard as an item (or a shard that stays behind)
# costs a timer of a worker that went away no more than this.
GUARD_GRACES = 6


class Context(Protocol):
    """What the shard loop offers an engine operation."""

    now: int

    async def current_run(self, namespace: str, workflow_id: str) -> Transition | None: ...

    async def run(self, namespace: str, workflow_id: str, run_id: str) -> Transition | None: ...

    def new_run(self, state: MutableState) -> Transition: ...

    def reply(self, command: dict[str, Any], *, ok: bool, run_id: str | None = None,
              error_type: str | None = None, error_message: str | None = None, created: bool = False,
              update_outcome: str | None = None) -> None: ...

    def delete_timer_row(self, key: str) -> None: ...

    def hold_timer(self, timer: TimerFiring, recheck_until_ms: int, guard_ms: int) -> bool:
        """Hold a due firing back until the shard has taken the requests it knows to be on
        the broker (until ``recheck_until_ms``, those known by the time it took them too),
        at most until ``guard_ms``; False (fire now) when none wait untaken."""

    def send(self, topic: str, key: bytes, record_name: str, record: dict[str, Any]) -> None:
        """Publish a record after the batch commits, for no run in particular (children.py)."""

    def last_heartbeat(self, run_id: str, scheduled_event_id: int) -> tuple[int, str | None] | None: ...

    def record_heartbeat(self, run_id: str, scheduled_event_id: int, attempt: int, details: str | None) -> None: ...


@dataclass(frozen=True)
class TimerFiring:
    key: str
    fire_at: int
    namespace: str
    workflow_id: str
    run_id: str
    kind: str
    ref: int
    attempt: int


# ---- workflow lifecycle ---------------------------------------------------------------


async def start_workflow(ctx: Context, req: StartWorkflowExecution,
                         signal: tuple[str, str | None] | None = None) -> None:
    """StartWorkflowExecution; with ``signal`` (its name and input), the start of a
    SignalWithStartWorkflowExecution, which signals a running run instead of starting one."""
    ns, wid = req.namespace, req.workflow_id
    reply_to = address(req)
    current = await ctx.current_run(ns, wid)
    if current is not None:
        s = current.state
        if req.request_id and s.start_request_id == req.request_id:
            ctx.reply(reply_to, ok=True, run_id=s.run_id)  # a retried start: same answer
            return
        if s.running and signal is not None:
            _signal(current, signal[0], signal[1], req.identity, "")
            settle(current)  # the signal is owed a workflow task when none is outstanding
            ctx.reply(reply_to, ok=True, run_id=s.run_id)
            return
    # The start policies (policies.py): validation let only their names through.
    outcome = policies.decide(current.state if current is not None else None,
                              policies.reuse_policy(req.id_reuse_policy),
                              policies.conflict_policy(req.id_conflict_policy))
    if current is not None and outcome.decision is policies.Decision.USE_EXISTING:
        ctx.reply(reply_to, ok=True, run_id=current.state.run_id)
        return
    if current is not None and outcome.decision is policies.Decision.REFUSE:
        ctx.reply(reply_to, ok=False, run_id=current.state.run_id, error_type="WorkflowAlreadyStarted",
                  error_message=outcome.reason)
        return
    if current is not None and outcome.decision is policies.Decision.TERMINATE_AND_START:
        current.add(EventType.WORKFLOW_EXECUTION_TERMINATED, reason=outcome.reason, identity=req.identity)
        settle(current)
    t = _new_run(ctx, ns, wid, req.workflow_type, req.task_queue, req.input,
                 execution_timeout_ms=req.execution_timeout_ms, run_timeout_ms=req.run_timeout_ms,
                 workflow_task_timeout_ms=req.workflow_task_timeout_ms,
                 request_id=req.request_id, identity=req.identity, memo=req.memo,
                 search_attributes=req.search_attributes,
                 retry={"retry_policy": req.retry_policy.to_dict() if req.retry_policy is not None else None})
    if signal is not None:
        _signal(t, signal[0], signal[1], req.identity, "")
    settle(t)
    ctx.reply(reply_to, ok=True, run_id=t.state.run_id, created=True)


async def signal_with_start(ctx: Context, req: SignalWithStartWorkflowExecution) -> None:
    """SignalWithStartWorkflowExecution: signal the running run, or start one with the signal."""
    start = StartWorkflowExecution(
        namespace=req.namespace, workflow_id=req.workflow_id, workflow_type=req.workflow_type,
        task_queue=req.task_queue, input=req.input, execution_timeout_ms=req.execution_timeout_ms,
        run_timeout_ms=req.run_timeout_ms, workflow_task_timeout_ms=req.workflow_task_timeout_ms,
        request_id=req.request_id, identity=req.identity, reply_to=req.reply_to,
        id_reuse_policy=req.id_reuse_policy, memo=req.memo, search_attributes=req.search_attributes)
    await start_workflow(ctx, start, (req.signal_name, req.signal_input))


def _new_run(ctx: Context, ns: str, wid: str, workflow_type: str, task_queue: str, input_: str | None, *,
             execution_timeout_ms: int, workflow_task_timeout_ms: int, request_id: str, identity: str,
             run_timeout_ms: int = 0, execution_expiration_time: int | None = None,
             continued_from: str | None = None, run_id: str | None = None, memo: str | None = None,
             search_attributes: str | None = None, parent: dict[str, Any] | None = None,
             retry: dict[str, Any] | None = None) -> Transition:
    """A new run; ``execution_expiration_time`` is the chain's (continue-as-new keeps the
    first run's), None for the first run of a chain: ``execution_timeout_ms`` from now.
    ``parent``: a child's parent, as ``children.parent_attributes`` gives it; ``retry``: the
    retry policy's started attributes (retry.started_attributes)."""
    state = MutableState(namespace=ns, workflow_id=wid, run_id=run_id or run_ids.new_run_id())
    t = ctx.new_run(state)
    t.current_changed = True
    execution_timeout_ms = max(0, execution_timeout_ms)
    if execution_expiration_time is None:
        execution_expiration_time = min(ctx.now + execution_timeout_ms, NEVER_MS) if execution_timeout_ms else 0
    t.add(EventType.WORKFLOW_EXECUTION_STARTED, workflow_type=workflow_type, task_queue=task_queue, input=input_,
          execution_timeout_ms=execution_timeout_ms, run_timeout_ms=max(0, run_timeout_ms),
          execution_expiration_time=execution_expiration_time,
          workflow_task_timeout_ms=workflow_task_timeout_ms if workflow_task_timeout_ms > 0 else 10000,
          request_id=request_id, identity=identity, continued_execution_run_id=continued_from, memo=memo,
          search_attributes=search_attributes, **(parent or {}), **(retry or {}))
    timeout_at = state.timeout_at()
    if 0 < timeout_at < NEVER_MS:
        t.set_timer(TimerKind.WORKFLOW_TIMEOUT, 0, timeout_at)
    return t


async def target(ctx: Context, req: Targeted) -> Transition | None:
    """The run a request names: its run id's, or the workflow id's current run."""
    if req.run_id:
        return await ctx.run(req.namespace, req.workflow_id, req.run_id)
    return await ctx.current_run(req.namespace, req.workflow_id)


async def _open_target(ctx: Context, req: SignalWorkflowExecution | TerminateWorkflowExecution,
                       verb: str) -> Transition | None:
    """The open run a signal or terminate is for; None (and a WorkflowNotFound reply) if none."""
    t = await target(ctx, req)
    if t is None or not t.state.running:
        # Naming the run asked for: "no open run" misled when the workflow had another one open.
        if not req.run_id:
            message = f"workflow {req.workflow_id!r} has no open run to {verb}"
        elif t is None:
            message = f"workflow {req.workflow_id!r} has no run {req.run_id}: nothing to {verb}"
        else:
            message = (f"workflow {req.workflow_id!r} run {req.run_id} is closed ({t.state.status}): nothing to"
                       f" {verb} (without run_id the workflow's current run is meant)")
        ctx.reply(address(req), ok=False, error_type="WorkflowNotFound", error_message=message)
        return None
    return t


async def signal_workflow(ctx: Context, req: SignalWorkflowExecution) -> None:
    t = await _open_target(ctx, req, "signal")
    if t is None:
        return
    if not (req.request_id and req.request_id in t.state.signal_request_ids):
        _signal(t, req.signal_name, req.input, req.identity, req.request_id)
        settle(t)
    ctx.reply(address(req), ok=True, run_id=t.state.run_id)


def _signal(t: Transition, name: str, input_: str | None, identity: str, request_id: str) -> None:
    t.add(EventType.WORKFLOW_EXECUTION_SIGNALED, signal_name=name, input=input_, identity=identity,
          request_id=request_id)


async def terminate_workflow(ctx: Context, req: TerminateWorkflowExecution) -> None:
    t = await _open_target(ctx, req, "terminate")
    if t is None:
        return
    t.add(EventType.WORKFLOW_EXECUTION_TERMINATED, reason=req.reason, identity=req.identity)
    settle(t)
    ctx.reply(address(req), ok=True, run_id=t.state.run_id)


def settle(t: Transition) -> None:
    """After every operation: close out a finished run, or schedule the workflow task owed."""
    s = t.state
    over = t.history_limits.exceeded(s) if s.running else None
    if over is not None:
        t.add(EventType.WORKFLOW_EXECUTION_TERMINATED, reason=over, identity=LIMIT_IDENTITY)
    if not s.running:
        if s.parent is not None or s.children:
            from .children import on_close  # tell the parent, apply the parent close policy

            on_close(t)
        t.delete_all_timers = True
        t.current_changed = True
        return
    if s.wt is None and (s.inputs_pending or updates.owed(s)) and s.wt_failures == 0 and not s.backoff_pending:
        schedule_workflow_task(t)


def schedule_workflow_task(t: Transition) -> None:
    s = t.state
    if s.wt_streak > 0:
        # A later attempt of a failing task: kept out of history unless it completes (transient.py).
        schedule_transient(s, t.now)
        t.changed_without_events = True
    else:
        _add_wt_scheduled(t)
    t.dispatch_workflow_task()


def _add_wt_scheduled(t: Transition) -> Event:
    s = t.state
    return t.add(EventType.WORKFLOW_TASK_SCHEDULED, task_queue=s.task_queue,
                 start_to_close_timeout_ms=s.workflow_task_timeout_ms, attempt=s.wt_failures + 1,
                 history_size_bytes=s.history_size_bytes,
                 suggest_continue_as_new=t.history_limits.suggests_continue_as_new(s))


# ---- workflow tasks ----------------------------------------------------------------


# A worker's word about one workflow task, or about one activity attempt.
WorkflowTaskAnswer = RecordWorkflowTaskStarted | RespondWorkflowTaskCompleted | RespondWorkflowTaskFailed
ActivityAnswer = (RecordActivityTaskStarted | RespondActivityTaskCompleted | RespondActivityTaskFailed
                  | RespondActivityTaskCanceled | RecordActivityTaskHeartbeat)


def _outstanding_wt(t: Transition | None, req: WorkflowTaskAnswer) -> WorkflowTaskInfo | None:
    if t is None or not t.state.running or t.state.wt is None:
        return None
    wt = t.state.wt
    if wt.scheduled_event_id != req.scheduled_event_id or wt.attempt != req.attempt:
        return None  # stale: an older task, or a duplicate delivery
    return wt


async def workflow_task_started(ctx: Context, req: RecordWorkflowTaskStarted) -> None:
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    wt = _outstanding_wt(t, req)
    if t is None or wt is None or wt.started_event_id:
        return
    _start_wt(ctx, t, req.identity, req.started_time)


def _start_wt(ctx: Context, t: Transition, identity: str, started_time: int) -> None:
    wt = t.state.wt
    assert wt is not None
    if wt.transient:
        start_transient(wt, ctx.now, started_time, identity)
        t.changed_without_events = True
    else:
        t.add(EventType.WORKFLOW_TASK_STARTED, scheduled_event_id=wt.scheduled_event_id, identity=identity,
              started_time=started_time)
    # The timeout counts from the hand-out: the frontend may send the started record late.
    since = min(started_time or ctx.now, ctx.now)
    t.set_timer(TimerKind.WORKFLOW_TASK_TIMEOUT, wt.scheduled_event_id, since + t.state.workflow_task_timeout_ms,
                wt.attempt)


async def _answered_wt(ctx: Context, req: RespondWorkflowTaskCompleted | RespondWorkflowTaskFailed
                       ) -> tuple[Transition, int, int] | None:
    """The run and (scheduled, started) ids of the workflow task a worker answered, or None
    when the answer is stale. An answer that overtook its started record implies the start.

    An answer that names a start other than the recorded one is stale too: the same task
    was handed out twice, and only the worker whose start history recorded ran it with the
    ``workflow.now()`` that a replay gives (answers from before started times: 0, unchecked).
    """
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    wt = _outstanding_wt(t, req)
    if t is None or wt is None:
        return None
    # A failure answer carries no start (its record has no started_time): unchecked.
    started_time = req.started_time if isinstance(req, RespondWorkflowTaskCompleted) else 0
    if not wt.started_event_id:
        _start_wt(ctx, t, req.identity, started_time)
    elif started_time and wt.handed_time and started_time != wt.handed_time:
        return None
    t.delete_timer(TimerKind.WORKFLOW_TASK_TIMEOUT, wt.scheduled_event_id)
    return t, wt.scheduled_event_id, wt.started_event_id


async def workflow_task_completed(ctx: Context, req: RespondWorkflowTaskCompleted) -> None:
    answered = await _answered_wt(ctx, req)
    if answered is None:
        return
    t, sid, started = answered
    _complete_wt(ctx, t, sid, started, req.commands, req.identity, req.runs_timers_ahead)
    settle(t)


def _complete_wt(ctx: Context, t: Transition, sid: int, started: int, commands: list[Command],
                 identity: str, runs_timers_ahead: bool = False) -> None:
    """``runs_timers_ahead``: the worker said it runs timers ahead for this run, so the user
    timers these commands start are held ``t.timer_ahead_grace_ms`` past their fire time
    (timer_ahead.py)."""
    from .commands import apply_commands, clashes, validate_commands

    problem = (validate_commands(commands) or clashes(t.state, commands)
               or updates.check_commands(t.state, commands))
    if problem is not None:
        bad = WorkflowTaskFailedCause.BAD_COMMAND
        _fail_wt(ctx, t, sid, started, bad, _failure(problem, bad), identity)
        return
    # A transient attempt that completes is written (and its inputs_pending is then its own).
    transient.materialize(t)
    if unseen.refused(t.state, commands):
        # It would close the run over inputs it did not see: refused whole, and a new task brings them.
        t.add(EventType.WORKFLOW_TASK_FAILED, scheduled_event_id=sid, started_event_id=started,
              cause=WorkflowTaskFailedCause.UNHANDLED_COMMAND, failure=unseen.refusal_failure(), identity=identity)
        schedule_workflow_task(t)
        return
    assert t.state.wt is not None
    timer_floor = timer_start.task_floor(t.state.wt)  # before the completion clears the task
    updates.task_completed(ctx, t, commands)
    completed = t.add(EventType.WORKFLOW_TASK_COMPLETED, scheduled_event_id=sid, started_event_id=started,
                      identity=identity)
    grace = t.timer_ahead_grace_ms if runs_timers_ahead else 0
    apply_commands(ctx, t, commands, completed["event_id"], timer_floor, grace)


async def workflow_task_failed(ctx: Context, req: RespondWorkflowTaskFailed) -> None:
    answered = await _answered_wt(ctx, req)
    if answered is not None:
        t, sid, started = answered
        failure = req.failure.to_dict() if req.failure is not None else None
        _fail_wt(ctx, t, sid, started, unseen.worker_cause(req.cause), failure, req.identity)


def _fail_wt(ctx: Context, t: Transition, sid: int, started: int, cause: str, failure: dict[str, Any] | None,
             identity: str) -> None:
    wt = t.state.wt
    if wt is not None and wt.transient:
        fail_transient(t.state, failure)  # not the streak's first failure: no event (transient.py)
        t.changed_without_events = True
    else:
        t.add(EventType.WORKFLOW_TASK_FAILED, scheduled_event_id=sid, started_event_id=started, cause=cause,
              failure=failure, identity=identity)
    _retry_wt(ctx, t)


def wt_retry_backoff_ms(failures: int) -> int:
    """The wait before the next attempt of a workflow task that failed ``failures`` times
    in a row: none after the first, then 1 s doubling up to MAX_WT_BACKOFF_MS, so a bad
    deploy neither spins nor waits long once fixed."""
    if failures <= 1:
        return 0
    return int(min(1000 * 2 ** min(failures - 2, 30), MAX_WT_BACKOFF_MS))


def _retry_wt(ctx: Context, t: Transition) -> None:
    failures = t.state.wt_streak
    backoff = wt_retry_backoff_ms(failures)
    if backoff == 0:
        schedule_workflow_task(t)
    else:
        t.set_timer(TimerKind.WORKFLOW_TASK_RETRY, 0, ctx.now + backoff, failures)


def _failure(message: str, type_: str) -> dict[str, Any]:
    return {"message": message, "type": type_, "stack_trace": "", "non_retryable": True, "details": None}


# ---- activities -------------------------------------------------------------------


def _pending_activity(t: Transition | None, req: ActivityAnswer) -> ActivityInfo | None:
    if t is None or not t.state.running:
        return None
    act = t.state.activities.get(str(req.scheduled_event_id))
    if act is None or act.attempt != req.attempt:
        return None
    return act


async def activity_started(ctx: Context, req: RecordActivityTaskStarted) -> None:
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    act = _pending_activity(t, req)
    if t is None or act is None or act.state != ActivityState.SCHEDULED:
        return
    _start_activity(t, req.scheduled_event_id, act, req.identity, req.started_time)


def _start_activity(t: Transition, sid: int, act: ActivityInfo, identity: str, started_time: int = 0) -> None:
    # No event yet: ActivityTaskStarted is written only by the attempt that ends the
    # activity (_record_started), so retried attempts do not grow history.
    start_attempt(act, t.now, started_time, identity)
    t.changed_without_events = True
    since = act.started_time  # the hand-out time
    t.delete_timer(TimerKind.ACTIVITY_SCHEDULE_TO_START, sid)
    t.set_timer(TimerKind.ACTIVITY_START_TO_CLOSE, sid, since + act.start_to_close_timeout_ms, act.attempt)
    if act.heartbeat_timeout_ms:
        t.set_timer(TimerKind.ACTIVITY_HEARTBEAT, sid, since + act.heartbeat_timeout_ms, act.attempt)


async def _answered_activity(ctx: Context, req: ActivityAnswer) -> tuple[Transition, ActivityInfo] | None:
    """The run and activity a worker answered (or heartbeat) for, or None when stale.
    An answer that comes without a started record implies the start."""
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    act = _pending_activity(t, req)
    if t is None or act is None or backing_off(act, ctx.now):
        return None
    if act.state != ActivityState.STARTED:
        _start_activity(t, req.scheduled_event_id, act, req.identity)
    return t, act


def backing_off(act: ActivityInfo, now: int) -> bool:
    """Whether the activity's attempt still waits out its retry backoff: no worker was handed
    it, so an answer for it (an async completion's by ids, asked for meanwhile) is stale."""
    return act.state == ActivityState.SCHEDULED and act.scheduled_time > now


def _record_started(t: Transition, sid: int, act: ActivityInfo) -> int:
    """Write the ActivityTaskStarted of the attempt that ends the activity (its number and
    the failure before it); its event id, or 0 when the attempt never started."""
    if act.started_event_id:
        return int(act.started_event_id)  # written already, by a build that wrote every start
    if act.state != ActivityState.STARTED:
        return 0
    return int(t.add(EventType.ACTIVITY_TASK_STARTED, scheduled_event_id=sid, attempt=act.attempt,
                     identity=act.last_worker_identity, started_time=act.started_time,
                     last_failure=act.last_failure)["event_id"])


async def activity_completed(ctx: Context, req: RespondActivityTaskCompleted) -> None:
    answered = await _answered_activity(ctx, req)
    if answered is None:
        return
    t, act = answered
    sid = req.scheduled_event_id
    ahead = req.workflow_task
    takes_ahead = ahead is not None and may_run_ahead(ctx, t, act.scheduled_time, ahead)
    t.add(EventType.ACTIVITY_TASK_COMPLETED, scheduled_event_id=sid, started_event_id=_record_started(t, sid, act),
          result=req.result, identity=req.identity)
    _drop_activity_timers(t, sid)
    if takes_ahead:
        assert ahead is not None
        run_ahead(ctx, t, ahead, req.identity)
    settle(t)


def may_run_ahead(ctx: Context, t: Transition, since: int, ahead: RunAheadWorkflowTask,
                  clock_ahead_ms: int = 0) -> bool:
    """Whether the workflow task a worker ran ahead on one input (an activity's result, or a
    timer's firing: timer_ahead.py) is the one history would have handed out: it would bring
    exactly that input and nothing else. ``since``: when the input could first exist (the
    activity's scheduling, the timer's fire time).

    The worker ran it on top of the task it ran before: the run's last completed task must
    be that one, as recorded: the task it was last handed (same scheduled id and start,
    so the same commands: the code is deterministic), or the task it ran ahead before
    (same ahead id, which the worker drew at random, and start). Nothing may be owed
    since: no workflow task scheduled or failing, no other input (signal, timer, activity
    result) waiting. Its time must not run backwards from that task's nor ahead of
    history's clock (by more than ``clock_ahead_ms``, the worker's clock allowed to lead).
    And the run must not be past the threshold that suggests continue-as-new: a task run
    ahead sees the suggestion of the task before it, so a run looping on its own results
    or timers would never learn it and run on into the hard limit; handed out, it does.
    """
    s = t.state
    if ahead.after_ahead_id:
        same_task = s.last_completed_wt_ahead_id == ahead.after_ahead_id
    else:
        same_task = (s.last_completed_wt_ahead_id == 0
                     and s.last_completed_wt_scheduled_id == ahead.after_scheduled_event_id)
    return (same_task and ahead.ahead_id != 0
            and s.running and s.wt is None and not s.inputs_pending and s.wt_failures == 0
            and s.last_completed_wt_started_time == ahead.after_started_time
            and max(s.last_completed_wt_started_time, since) <= ahead.started_time <= ctx.now + clock_ahead_ms
            and not t.history_limits.suggests_continue_as_new(s))


def run_ahead(ctx: Context, t: Transition, ahead: RunAheadWorkflowTask, identity: str) -> None:
    """Record the workflow task run ahead: scheduled, started by the answering worker at its
    time, and completed with its commands, without ever being handed out."""
    scheduled = _add_wt_scheduled(t)  # attempt 1: may_run_ahead saw no failures
    started = t.add(EventType.WORKFLOW_TASK_STARTED, scheduled_event_id=scheduled["event_id"], identity=identity,
                    started_time=ahead.started_time, ran_ahead_id=ahead.ahead_id)
    _complete_wt(ctx, t, scheduled["event_id"], started["event_id"], ahead.commands, identity,
                 ahead.runs_timers_ahead)


async def activity_failed(ctx: Context, req: RespondActivityTaskFailed) -> None:
    answered = await _answered_activity(ctx, req)
    if answered is None:
        return
    t, act = answered
    sid = req.scheduled_event_id
    failure = req.failure
    details = req.last_heartbeat_details
    if details is not None:  # what the attempt recorded last, maybe never sent as a heartbeat
        ctx.record_heartbeat(t.state.run_id, sid, req.attempt, details)
    backoff = retry_backoff(act, ctx.now, failure.type, failure.non_retryable)
    if backoff is None:
        t.add(EventType.ACTIVITY_TASK_FAILED, scheduled_event_id=sid, started_event_id=_record_started(t, sid, act),
              failure=failure.to_dict(), identity=req.identity, retry_backoff_ms=None)
    else:
        _retry_activity(ctx, t, sid, act, failure.to_dict(), backoff)
    _after_attempt(ctx, t, sid, backoff)


async def activity_heartbeat(ctx: Context, req: RecordActivityTaskHeartbeat) -> None:
    answered = await _answered_activity(ctx, req)  # a heartbeat, like an answer, implies the start
    if answered is None:
        return
    t, _ = answered
    ctx.record_heartbeat(t.state.run_id, req.scheduled_event_id, req.attempt, req.details)


def _activity_timed_out(ctx: Context, t: Transition, sid: int, act: ActivityInfo, timeout_type: TimeoutType) -> None:
    retryable = timeout_type.retryable
    backoff = retry_backoff(act, ctx.now, "TimeoutError", False) if retryable else None
    if backoff is not None:
        _retry_activity(ctx, t, sid, act, {
            "message": f"activity timed out ({timeout_type})", "type": "TimeoutError", "stack_trace": "",
            "non_retryable": False, "details": None}, backoff)
    else:
        heartbeat = ctx.last_heartbeat(t.state.run_id, sid)
        t.add(EventType.ACTIVITY_TASK_TIMED_OUT, scheduled_event_id=sid, started_event_id=_record_started(t, sid, act),
              timeout_type=timeout_type, last_heartbeat_details=heartbeat[1] if heartbeat else act.heartbeat_details,
              retry_backoff_ms=None, last_failure=act.last_failure)
    _after_attempt(ctx, t, sid, backoff)


def _retry_activity(ctx: Context, t: Transition, sid: int, act: ActivityInfo, failure: dict[str, Any],
                    backoff: int) -> None:
    """An attempt that another follows writes no event (as in Temporal): the pending
    activity keeps its number, the failure and the last heartbeat details, which the next
    attempt is handed, and the snapshot makes them durable."""
    heartbeat = ctx.last_heartbeat(t.state.run_id, sid)
    retry_attempt(act, ctx.now + backoff, failure, heartbeat[1] if heartbeat else None)
    t.changed_without_events = True


def _after_attempt(ctx: Context, t: Transition, sid: int, backoff: int | None) -> None:
    if backoff is None:
        _drop_activity_timers(t, sid)
    else:
        t.delete_timer(TimerKind.ACTIVITY_START_TO_CLOSE, sid)
        t.delete_timer(TimerKind.ACTIVITY_HEARTBEAT, sid)
        t.set_timer(TimerKind.ACTIVITY_RETRY, sid, ctx.now + backoff, t.state.activities[str(sid)].attempt)
    settle(t)


def _drop_activity_timers(t: Transition, sid: int) -> None:
    for kind in ACTIVITY_TIMERS:
        t.delete_timer(kind, sid)


def retry_backoff(act: ActivityInfo, now: int, error_type: str, non_retryable: bool) -> int | None:
    """Milliseconds until the next attempt, or None when the attempt just made is the last.
    An activity the workflow asked to cancel is never tried again (Temporal's retry state
    CancelRequested): its failure or timeout ends it, and a workflow waiting for it goes on."""
    if act.cancel_requested_event_id:
        return None
    deadline = act.first_scheduled_time + act.schedule_to_close_timeout_ms if act.schedule_to_close_timeout_ms else 0
    return next_backoff(act.retry_policy or DEFAULT_RETRY, act.attempt, error_type, non_retryable, now, deadline)


# ---- timers ------------------------------------------------------------------------


async def fire_timer(ctx: Context, timer: TimerFiring) -> None:
    t = await ctx.run(timer.namespace, timer.workflow_id, timer.run_id)
    kind = timer.kind
    pending = None
    if t is not None and t.state.running and kind == TimerKind.USER_TIMER:
        pending = t.state.timer_started_by(timer.ref)  # ref: the TimerStarted event id
        # A row armed past its timer's fire time: the grace of a worker that runs timers
        # ahead (decision 0014) is over. Its task may wait among the requests the shard has
        # yet to take, behind a burst, or reach it in the next few graces: the firing waits
        # for those (decision 0017) rather than waste that task and replay the run in the
        # worker.
        grace = timer.fire_at - pending.fire_at if pending is not None else 0
        if grace > 0 and ctx.hold_timer(timer, timer.fire_at + RECHECK_GRACES * grace,
                                        timer.fire_at + GUARD_GRACES * grace):
            return
    ctx.delete_timer_row(timer.key)
    if t is None or not t.state.running:
        return
    s = t.state
    if kind == TimerKind.USER_TIMER:
        if pending is not None:
            t.add(EventType.TIMER_FIRED, timer_id=pending.timer_id, started_event_id=timer.ref)
    elif kind == TimerKind.WORKFLOW_TIMEOUT:
        from . import retry

        retry.time_out(ctx, t)
    elif kind == TimerKind.WORKFLOW_BACKOFF:
        from . import retry

        retry.backoff_over(t)
    elif kind == TimerKind.WORKFLOW_TASK_TIMEOUT:
        wt = s.wt
        if wt and wt.scheduled_event_id == timer.ref and wt.attempt == timer.attempt and wt.started_event_id:
            if wt.transient:
                fail_transient(s, TASK_TIMED_OUT)
                t.changed_without_events = True
            else:
                t.add(EventType.WORKFLOW_TASK_TIMED_OUT, scheduled_event_id=timer.ref,
                      started_event_id=wt.started_event_id)
            _retry_wt(ctx, t)
    elif kind == TimerKind.WORKFLOW_TASK_RETRY:
        # The streak's backoff is over (one timer per run: a newer one replaces it).
        if s.wt is None and s.wt_streak > 0:
            schedule_workflow_task(t)
    else:
        _fire_activity_timer(ctx, t, timer)
    settle(t)


def _fire_activity_timer(ctx: Context, t: Transition, timer: TimerFiring) -> None:
    sid = timer.ref
    act = t.state.activities.get(str(sid))
    if act is None:
        return
    kind = timer.kind
    if kind == TimerKind.ACTIVITY_SCHEDULE_TO_CLOSE:
        _activity_timed_out(ctx, t, sid, act, TimeoutType.SCHEDULE_TO_CLOSE)
    elif act.attempt != timer.attempt:
        return  # a timer of an earlier attempt
    elif kind == TimerKind.ACTIVITY_RETRY and act.state == ActivityState.SCHEDULED:
        t.dispatch_activity_task(sid)
        if act.schedule_to_start_timeout_ms:
            t.set_timer(TimerKind.ACTIVITY_SCHEDULE_TO_START, sid, ctx.now + act.schedule_to_start_timeout_ms,
                        act.attempt)
    elif kind == TimerKind.ACTIVITY_SCHEDULE_TO_START and act.state == ActivityState.SCHEDULED:
        _activity_timed_out(ctx, t, sid, act, TimeoutType.SCHEDULE_TO_START)
    elif kind == TimerKind.ACTIVITY_START_TO_CLOSE and act.state == ActivityState.STARTED:
        _activity_timed_out(ctx, t, sid, act, TimeoutType.START_TO_CLOSE)
    elif kind == TimerKind.ACTIVITY_HEARTBEAT and act.state == ActivityState.STARTED:
        beat = ctx.last_heartbeat(t.state.run_id, sid)
        last = max(act.started_time, beat[0] if beat else 0)
        if ctx.now - last < act.heartbeat_timeout_ms:
            t.set_timer(TimerKind.ACTIVITY_HEARTBEAT, sid, last + act.heartbeat_timeout_ms, act.attempt)
        else:
            _activity_timed_out(ctx, t, sid, act, TimeoutType.HEARTBEAT)
