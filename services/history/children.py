"""Child workflows: what a parent's commands send to other shards, and what comes back.

A child may live on any shard, so everything between a parent and its child travels as a
command on ``kadence.requests`` written to the outbox of the sender's batch (published
after its commit, never before):

* The parent's ``StartChildWorkflowExecution`` command records
  ``StartChildWorkflowExecutionInitiated`` and sends a ``StartChildWorkflowExecution``
  request (key: the child's namespace/workflow id). Its request id and the child's run id
  are derived from the parent's run id and the initiated event id, so a redelivered request
  is a duplicate for the request ledger (ledger.py) and the parent can name the child's run
  before it hears of the start.
* The child's shard starts the run (its ``WorkflowExecutionStarted`` names the parent) and
  answers with a ``ChildWorkflowNotice`` (key: the parent's namespace/workflow id): kind
  ``Started``, or ``StartFailed`` (cause ``WorkflowAlreadyStarted``) when another run of
  that workflow id is open.
* When the child's run closes (not when it continues as new: the new run inherits the
  parent), its shard sends a notice of kind Completed/Failed/TimedOut/Terminated/Canceled.
* When the parent's run closes (continue-as-new included), each open child gets the
  parent close policy: ``Terminate`` sends an ``ApplyParentClosePolicy`` to the child's
  shard, which terminates the child's current run if it is still that parent's child (so
  a child that continued as new is found, and a later run of the same id is left alone);
  ``Abandon`` sends nothing; ``RequestCancel`` does as ``Terminate`` but asks the run to
  cancel: the child's shard records the request on the child's run as a
  ``RequestCancelWorkflowExecution`` would (cancellation.py, the same handler), without a
  further hop over ``kadence.requests``.
* ``SignalExternalWorkflowExecution`` (to a child, or with ``child_workflow_only`` false to
  any workflow id of the sender's namespace) records its initiated event, sends a
  ``SignalExternalWorkflowExecution`` request, and the target's shard answers with a
  notice of kind ``Signaled`` or ``SignalFailed``. The reserved signal name
  CANCEL_CHILD_SIGNAL asks the target to cancel instead (a child's, or an external
  handle's ``cancel()``).

A notice is applied at most once: it names the pending child (or signal) by its initiated
event id, and the event it adds removes it or moves it on (a second copy finds nothing to
do); a run that closed meanwhile ignores it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from kadence_protocol.enums import (
    CLOSE_STATUS,
    ChildState,
    ChildWorkflowNoticeKind,
    CommandType,
    EventType,
    ParentClosePolicy,
    RunStatus,
)
from kadence_protocol.queries import CANCEL_CHILD_SIGNAL
from kadence_protocol.records import (
    ApplyParentClosePolicy,
    ChildWorkflowNotice,
    RequestCancelWorkflowExecution,
    SignalExternalWorkflowExecution,
    StartChildWorkflowExecution,
)
from services.common import kafka

from . import cancellation, engine
from .builder import Transition
from .state import MutableState, ParentInfo, child_run_id

NOTICE = "ChildWorkflowNotice"
_POLICY = "ApplyParentClosePolicy"
COMMANDS = frozenset({CommandType.START_CHILD_WORKFLOW_EXECUTION, CommandType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION})
IDENTITY = "kadence-history"
# The events that close a run.
_CLOSING = frozenset(CLOSE_STATUS)


NoticeKind = ChildWorkflowNoticeKind  # ChildWorkflowNotice.kind: what became of a child or of a signal to it


class StartFailedCause(StrEnum):
    WORKFLOW_ALREADY_STARTED = "WorkflowAlreadyStarted"


class SignalFailedCause(StrEnum):
    WORKFLOW_NOT_FOUND = "WorkflowNotFound"


# The parent's event for each way a child closes (the notice kind is the child's status).
CLOSE_EVENTS = {
    NoticeKind.COMPLETED: EventType.CHILD_WORKFLOW_EXECUTION_COMPLETED,
    NoticeKind.FAILED: EventType.CHILD_WORKFLOW_EXECUTION_FAILED,
    NoticeKind.TIMED_OUT: EventType.CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
    NoticeKind.TERMINATED: EventType.CHILD_WORKFLOW_EXECUTION_TERMINATED,
    NoticeKind.CANCELED: EventType.CHILD_WORKFLOW_EXECUTION_CANCELED,
}


def validate(i: int, kind: str, a: dict[str, Any]) -> str | None:
    """Why command ``i`` cannot be accepted, or None."""
    if not a["workflow_id"]:
        return f"commands[{i}]: workflow_id is empty"
    if kind == CommandType.START_CHILD_WORKFLOW_EXECUTION:
        if not a["workflow_type"]:
            return f"commands[{i}]: workflow_type is empty"
        if min(a["execution_timeout_ms"], a["run_timeout_ms"], a["workflow_task_timeout_ms"]) < 0:
            return f"commands[{i}]: a timeout is negative"
    elif not a["signal_name"]:
        return f"commands[{i}]: signal_name is empty"
    return None


def parent_attributes(parent: ParentInfo | None) -> dict[str, Any] | None:
    """The WorkflowExecutionStarted attributes naming ``parent`` (MutableState.parent)."""
    if parent is None:
        return None
    return {"parent_namespace": parent.namespace, "parent_workflow_id": parent.workflow_id,
            "parent_run_id": parent.run_id, "parent_initiated_event_id": parent.initiated_event_id}


# ---- the parent's commands ----------------------------------------------------------------


def apply_command(t: Transition, kind: str, a: dict[str, Any], completed_id: int) -> None:
    if kind == CommandType.START_CHILD_WORKFLOW_EXECUTION:
        _initiate_child(t, a, completed_id)
    else:
        _initiate_signal(t, a, completed_id)


def _initiate_child(t: Transition, a: dict[str, Any], completed_id: int) -> None:
    s = t.state
    task_queue = a["task_queue"] or s.task_queue
    ev = t.add(EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED, namespace=s.namespace, workflow_id=a["workflow_id"],
               workflow_type=a["workflow_type"], task_queue=task_queue, input=a["input"],
               execution_timeout_ms=a["execution_timeout_ms"], run_timeout_ms=a["run_timeout_ms"],
               workflow_task_timeout_ms=a["workflow_task_timeout_ms"],
               parent_close_policy=a["parent_close_policy"], workflow_task_completed_event_id=completed_id,
               retry_policy=a.get("retry_policy"))
    iid = ev["event_id"]
    t.publish(kafka.REQUESTS, kafka.workflow_key(s.namespace, a["workflow_id"]), "StartChildWorkflowExecution", {
        "namespace": s.namespace, "workflow_id": a["workflow_id"], "new_run_id": child_run_id(s.run_id, iid),
        "workflow_type": a["workflow_type"], "task_queue": task_queue, "input": a["input"],
        "execution_timeout_ms": a["execution_timeout_ms"], "run_timeout_ms": a["run_timeout_ms"],
        "workflow_task_timeout_ms": a["workflow_task_timeout_ms"], "request_id": f"child:{s.run_id}:{iid}",
        "parent_namespace": s.namespace, "parent_workflow_id": s.workflow_id, "parent_run_id": s.run_id,
        "parent_initiated_event_id": iid, "retry_policy": a.get("retry_policy"),
    })


def _initiate_signal(t: Transition, a: dict[str, Any], completed_id: int) -> None:
    s = t.state
    ev = t.add(EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, namespace=s.namespace,
               workflow_id=a["workflow_id"],
               run_id=a.get("run_id"), signal_name=a["signal_name"], input=a["input"],
               child_workflow_only=a.get("child_workflow_only", True), workflow_task_completed_event_id=completed_id)
    iid = ev["event_id"]
    t.publish(kafka.REQUESTS, kafka.workflow_key(s.namespace, a["workflow_id"]), "SignalExternalWorkflowExecution", {
        "namespace": s.namespace, "workflow_id": a["workflow_id"], "run_id": a.get("run_id"),
        "signal_name": a["signal_name"], "input": a["input"], "request_id": f"signal:{s.run_id}:{iid}",
        "sender_namespace": s.namespace, "sender_workflow_id": s.workflow_id, "sender_run_id": s.run_id,
        "sender_initiated_event_id": iid, "child_workflow_only": a.get("child_workflow_only", True),
    })


# ---- the child's shard --------------------------------------------------------------------


def _notice(namespace: str, workflow_id: str, run_id: str, initiated_event_id: int, kind: NoticeKind,
            child_namespace: str, child_workflow_id: str, **rest: Any) -> tuple[bytes, dict[str, Any]]:
    """The key and record of a ChildWorkflowNotice to run ``run_id``."""
    record = {"namespace": namespace, "workflow_id": workflow_id, "run_id": run_id,
              "initiated_event_id": initiated_event_id, "kind": kind.value, "child_namespace": child_namespace,
              "child_workflow_id": child_workflow_id, "child_run_id": None, "workflow_type": "", "result": None,
              "failure": None, "reason": "", "details": None, "cause": "", **rest}
    return kafka.workflow_key(namespace, workflow_id), record


def _send(out: Transition | engine.Context, notice: tuple[bytes, dict[str, Any]]) -> None:
    """Publish a notice after the batch commits: with a run's transition, or with the batch."""
    key, record = notice
    if isinstance(out, Transition):
        out.publish(kafka.REQUESTS, key, NOTICE, record)
    else:
        out.send(kafka.REQUESTS, key, NOTICE, record)


def _ledger(req: StartChildWorkflowExecution | SignalExternalWorkflowExecution) -> dict[str, Any]:
    """What ``Context.reply`` needs to record the request id: no one waits for a reply."""
    return {"namespace": req.namespace, "workflow_id": req.workflow_id, "request_id": req.request_id,
            "reply_to": None}


async def start_child(ctx: engine.Context, req: StartChildWorkflowExecution) -> None:
    """Start a parent's child (a redelivery never gets here: the request ledger answers it)."""
    ns, wid = req.namespace, req.workflow_id
    parent = (req.parent_namespace, req.parent_workflow_id, req.parent_run_id, req.parent_initiated_event_id)
    current = await ctx.current_run(ns, wid)
    if current is not None and current.state.run_id == req.new_run_id:
        return  # started already (a copy the ledger no longer remembers)
    if current is not None and await ctx.run(ns, wid, req.new_run_id) is not None:
        # Started already, and the id has had another run since: starting the run again
        # would repeat its primary key, and the batch would fail for ever.
        return
    if current is not None and current.state.running:
        _send(ctx, _notice(*parent, NoticeKind.START_FAILED, ns, wid, workflow_type=req.workflow_type,
                           cause=StartFailedCause.WORKFLOW_ALREADY_STARTED.value))
        return
    t = engine._new_run(ctx, ns, wid, req.workflow_type, req.task_queue, req.input,
                        execution_timeout_ms=req.execution_timeout_ms, run_timeout_ms=req.run_timeout_ms,
                        workflow_task_timeout_ms=req.workflow_task_timeout_ms, request_id=req.request_id,
                        identity=IDENTITY, run_id=req.new_run_id,
                        parent=parent_attributes(ParentInfo(*parent)),
                        retry={"retry_policy": req.retry_policy.to_dict() if req.retry_policy is not None else None})
    engine.settle(t)
    ctx.reply(_ledger(req), ok=True, run_id=t.state.run_id, created=True)  # the ledger records the request id
    _send(t, _notice(*parent, NoticeKind.STARTED, ns, wid, child_run_id=t.state.run_id,
                     workflow_type=req.workflow_type))


async def signal_external(ctx: engine.Context, req: SignalExternalWorkflowExecution) -> None:
    """Deliver a signal (a parent's to its child, or any run's to a workflow of its namespace)
    and tell the sender whether it was."""
    ns, wid = req.namespace, req.workflow_id
    sender = (req.sender_namespace, req.sender_workflow_id, req.sender_run_id, req.sender_initiated_event_id)
    t = await (ctx.run(ns, wid, req.run_id) if req.run_id else ctx.current_run(ns, wid))
    if req.child_workflow_only and req.run_id and (t is None or not t.state.running):
        # A child that continued as new: the signal is for its chain's current run.
        current = await ctx.current_run(ns, wid)
        if current is not None and current.state.parent is not None \
                and current.state.parent.run_id == req.sender_run_id:
            t = current
    parent = t.state.parent if t is not None else None
    # An external handle's signal goes to any open run of the namespace (the record names one
    # namespace: validation); a child's handle only to a child of the sender.
    not_child = parent is None or (parent.namespace, parent.workflow_id) != sender[:2]
    if t is None or not t.state.running or (req.child_workflow_only and not_child):
        _send(ctx, _notice(*sender, NoticeKind.SIGNAL_FAILED, ns, wid, child_run_id=req.run_id,
                           cause=SignalFailedCause.WORKFLOW_NOT_FOUND.value))
        return
    if req.signal_name == CANCEL_CHILD_SIGNAL:
        # The parent's code stopped waiting for its child (or an external handle's cancel()):
        # the target is asked to cancel, as
        # a RequestCancelWorkflowExecution would ask it (once per run, whatever repeats).
        await cancellation.request_cancel_workflow(ctx, RequestCancelWorkflowExecution(
            namespace=ns, workflow_id=wid, run_id=t.state.run_id,
            reason=f"canceled by {'its parent' if req.child_workflow_only else 'workflow'} {req.sender_workflow_id}",
            request_id=req.request_id,
            identity=IDENTITY, reply_to=None))
    elif req.request_id not in t.state.signal_request_ids:
        t.add(EventType.WORKFLOW_EXECUTION_SIGNALED, signal_name=req.signal_name, input=req.input,
              identity=IDENTITY,
              request_id=req.request_id)
        engine.settle(t)
    ctx.reply(_ledger(req), ok=True, run_id=t.state.run_id)
    _send(t, _notice(*sender, NoticeKind.SIGNALED, ns, wid, child_run_id=t.state.run_id))


def on_close(t: Transition) -> None:
    """The run closed in this transition: tell its parent, apply its children's close policy."""
    if t.close_handled:
        return
    closing = next((e for e in reversed(t.events) if e["event_type"] in _CLOSING), None)
    if closing is None:
        return  # closed in an earlier batch: told then
    t.close_handled = True
    s = t.state
    status = s.status
    assert status is not None  # closed, so started
    # A new run carries the parent on: continue-as-new, and a retry (retry.py).
    if s.parent is not None and status != RunStatus.CONTINUED_AS_NEW and not _retried(s):
        p = s.parent
        rest: dict[str, Any] = {"child_run_id": s.run_id, "workflow_type": s.workflow_type}
        if status == RunStatus.COMPLETED:
            rest["result"] = s.result
        elif status == RunStatus.FAILED:
            rest["failure"] = s.failure
        elif status == RunStatus.TERMINATED:
            rest["reason"] = closing["attributes"].get("reason") or ""
        elif status == RunStatus.CANCELED:
            rest["details"] = closing["attributes"].get("details")
        _send(t, _notice(p.namespace, p.workflow_id, p.run_id, p.initiated_event_id,
                         NoticeKind(status), s.namespace, s.workflow_id, **rest))
    for iid, child in s.children.items():
        policy = ParentClosePolicy(child.parent_close_policy)
        if policy == ParentClosePolicy.ABANDON:
            continue
        # To the child's shard, which knows the child's current run: the child may have
        # continued as new, and its workflow id may belong to another run by now.
        t.publish(kafka.REQUESTS, kafka.workflow_key(child.namespace, child.workflow_id), _POLICY, {
            "namespace": child.namespace, "workflow_id": child.workflow_id,
            "parent_namespace": s.namespace, "parent_workflow_id": s.workflow_id, "parent_run_id": s.run_id,
            "parent_initiated_event_id": int(iid), "policy": policy.value,
            "reason": f"parent {s.workflow_id} closed ({s.status}); parent close policy {policy.value}",
            "request_id": f"{policy.value}:{s.run_id}:{iid}"})


async def apply_parent_close_policy(ctx: engine.Context, req: ApplyParentClosePolicy) -> None:
    """Terminate (or ask to cancel) the child's current run, if it is still the parent's child."""
    ns, wid = req.namespace, req.workflow_id
    t = await ctx.current_run(ns, wid)
    if t is None or not t.state.running:
        return  # closed already: its own notice tells the parent (which ignores it)
    parent = t.state.parent
    if parent is None or (parent.namespace, parent.workflow_id, parent.run_id,
                          parent.initiated_event_id) != (req.parent_namespace, req.parent_workflow_id,
                                                            req.parent_run_id, req.parent_initiated_event_id):
        return  # the workflow id belongs to another run now
    if req.policy == ParentClosePolicy.TERMINATE:
        t.add(EventType.WORKFLOW_EXECUTION_TERMINATED, reason=req.reason, identity=IDENTITY)
        engine.settle(t)
    elif req.policy == ParentClosePolicy.REQUEST_CANCEL:
        # This shard owns the child's run: record the cancel request here, through the
        # handler a RequestCancelWorkflowExecution takes (once per run, whatever repeats).
        await cancellation.request_cancel_workflow(ctx, RequestCancelWorkflowExecution(
            namespace=ns, workflow_id=wid, run_id=t.state.run_id, reason=req.reason,
            request_id=req.request_id, identity=IDENTITY, reply_to=None))


# ---- the parent's shard -------------------------------------------------------------------


async def notify_child_outcome(ctx: engine.Context, req: ChildWorkflowNotice) -> None:
    """Record what became of a child (or of a signal to it) in its parent's run."""
    t = await ctx.run(req.namespace, req.workflow_id, req.run_id)
    if t is None or not t.state.running:
        return  # the parent closed meanwhile
    s = t.state
    iid = req.initiated_event_id
    kind = req.kind
    ids = {"initiated_event_id": iid, "namespace": req.child_namespace, "workflow_id": req.child_workflow_id}
    if kind in (NoticeKind.SIGNALED, NoticeKind.SIGNAL_FAILED):
        signal = s.signals_out.get(str(iid))
        if signal is None:
            return
        if kind == NoticeKind.SIGNALED:
            t.add(EventType.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED, **ids, run_id=req.child_run_id or "")
        else:
            t.add(EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED, **ids, run_id=signal.run_id,
                  cause=req.cause)
        engine.settle(t)
        return
    child = s.children.get(str(iid))
    if child is None:
        return  # recorded already
    typed = {**ids, "workflow_type": child.workflow_type}
    if kind == NoticeKind.START_FAILED:
        if child.state == ChildState.INITIATED:
            t.add(EventType.START_CHILD_WORKFLOW_EXECUTION_FAILED, **typed, cause=req.cause)
    else:
        run_id = req.child_run_id or child.run_id
        if child.state == ChildState.INITIATED:
            t.add(EventType.CHILD_WORKFLOW_EXECUTION_STARTED, **typed, run_id=run_id)
        if kind != NoticeKind.STARTED:
            closed = {**typed, "run_id": run_id, "started_event_id": child.started_event_id}
            if kind == NoticeKind.COMPLETED:
                closed["result"] = req.result
            elif kind == NoticeKind.FAILED:
                closed["failure"] = req.failure.to_dict() if req.failure is not None else None
            elif kind == NoticeKind.TERMINATED:
                closed["reason"] = req.reason
            elif kind == NoticeKind.CANCELED:
                closed["details"] = req.details
            t.add(CLOSE_EVENTS[kind], **closed)
    engine.settle(t)


def _retried(s: MutableState) -> bool:
    from .retry import retried  # retry imports this module

    return retried(s)
