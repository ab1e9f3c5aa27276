"""The workflow retry policy: a run that fails or times out, with attempts left, is retried
as a new run of the same workflow id (as in Temporal).

The closing event names the new run (``new_run_id`` of WorkflowExecutionFailed /
WorkflowExecutionTimedOut), so result waits follow the chain as they follow
continue-as-new; the new run's WorkflowExecutionStarted carries ``attempt + 1``, the
policy, the backoff, the memo and the search attributes as the run closed with them (its
start's, with workflow code's upserts merged in: Temporal's rule), and its first workflow task waits for a durable timer
(``TimerKind.WORKFLOW_BACKOFF``) before it is scheduled. The parent of a child hears only
of the last run's close (children.on_close skips a retried one). Terminated and canceled
runs are never retried; the chain's execution timeout bounds the retries.
"""

from __future__ import annotations

from typing import Any

from kadence_protocol.enums import EventType, RunStatus, TimerKind
from kadence_protocol.retry import next_backoff

from . import children, run_ids
from .builder import Transition
from .engine import NEVER_MS, Context, _new_run, schedule_workflow_task, settle
from .state import Failure, MutableState

TIMEOUT_ERROR = "TimeoutError"  # the error type a run timeout counts as for non_retryable_error_types


def backoff_ms(policy: dict[str, Any] | None, attempt: int, error_type: str, non_retryable: bool, now: int,
               expiration_time: int) -> int | None:
    """Milliseconds before the next run, or None when the run that just closed (attempt
    ``attempt``) is the last: no policy, a non-retryable error, the attempts spent, or the
    next run would start after the chain's expiration (0: none). The rule is the protocol's
    (kadence_protocol/retry.py), the one activities follow."""
    if policy is None:
        return None
    return next_backoff(policy, attempt, error_type, non_retryable, now, expiration_time)


def retried(s: MutableState) -> bool:
    """Whether the closed run ``s`` was retried by a new run (its parent is not told)."""
    return s.status in (RunStatus.FAILED, RunStatus.TIMED_OUT) and bool(s.new_run_id)


def fail(ctx: Context, t: Transition, failure: Failure, completed_id: int) -> None:
    """Close the run as Failed (its FailWorkflowExecution command), retried if the policy says so."""
    s = t.state
    backoff = backoff_ms(s.retry_policy, s.attempt, failure.get("type") or "", bool(failure.get("non_retryable")),
                         ctx.now, s.execution_expiration_time)
    new_run_id = run_ids.new_run_id() if backoff is not None else None
    t.add(EventType.WORKFLOW_EXECUTION_FAILED, failure=failure, workflow_task_completed_event_id=completed_id,
          new_run_id=new_run_id)
    if backoff is not None and new_run_id is not None:
        _retry(ctx, t, new_run_id, backoff)


def time_out(ctx: Context, t: Transition) -> None:
    """Close the run as TimedOut (its run or execution timeout fired), retried if the policy
    says so: a run timeout may be, the chain's expiration never (no time is left)."""
    s = t.state
    backoff = backoff_ms(s.retry_policy, s.attempt, TIMEOUT_ERROR, False, ctx.now, s.execution_expiration_time)
    new_run_id = run_ids.new_run_id() if backoff is not None else None
    t.add(EventType.WORKFLOW_EXECUTION_TIMED_OUT, new_run_id=new_run_id)
    if backoff is not None and new_run_id is not None:
        _retry(ctx, t, new_run_id, backoff)


def _retry(ctx: Context, t: Transition, new_run_id: str, backoff: int) -> None:
    s = t.state
    new = _new_run(ctx, s.namespace, s.workflow_id, s.workflow_type, s.task_queue, s.input,
                   execution_timeout_ms=s.execution_timeout_ms, workflow_task_timeout_ms=s.workflow_task_timeout_ms,
                   run_timeout_ms=s.run_timeout_ms, execution_expiration_time=s.execution_expiration_time,
                   request_id=s.start_request_id, identity="", continued_from=s.run_id, run_id=new_run_id,
                   memo=s.memo, search_attributes=s.search_attributes,  # as they are now (upserts too)
                   parent=children.parent_attributes(s.parent),
                   retry=started_attributes(s.retry_policy, s.attempt + 1, backoff))
    if backoff > 0:
        new.set_timer(TimerKind.WORKFLOW_BACKOFF, 0, min(ctx.now + backoff, NEVER_MS))
    settle(new)


def started_attributes(policy: dict[str, Any] | None, attempt: int = 1, backoff: int = 0) -> dict[str, Any]:
    """The WorkflowExecutionStarted attributes of a run's retry policy and attempt."""
    return {"retry_policy": policy, "attempt": attempt, "first_workflow_task_backoff_ms": backoff}


def backoff_over(t: Transition) -> None:
    """The backoff timer fired: the retried run's first workflow task is owed now (its
    WorkflowTaskScheduled ends the backoff in the fold)."""
    if t.state.backoff_pending and t.state.wt is None:
        schedule_workflow_task(t)
