"""The API workflow code is written against.

Decorators (``defn``, ``run``, ``signal``, ``query``) declare a workflow class; the other
functions may only be called from workflow code running in a worker (or a replayer).
Everything here is deterministic: time, randomness and UUIDs come from the workflow's
history, never from the machine.
"""

from __future__ import annotations

import asyncio
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, overload

from kadence._activity import activity_name_of
from kadence._workflow.children import ChildWorkflowHandle, ExternalWorkflowHandle
from kadence._workflow.definition import defn, query, run, run_result_type, signal, update, workflow_name_of
from kadence._workflow.instance import ContinueAsNewError, ParentInfo, current_instance
from kadence._workflow.instance import WorkflowInfo as Info
from kadence.common import ActivityCancellationType, HandlerUnfinishedPolicy, ParentClosePolicy, RetryPolicy, to_millis
from kadence.converter import signature_of
from kadence.interceptor import (
    ContinueAsNewInput,
    ScheduleActivityInput,
    ScheduleLocalActivityInput,
    SleepInput,
    StartChildWorkflowInput,
)

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "ActivityCancellationType",
    "ChildWorkflowHandle",
    "ContinueAsNewError",
    "ExternalWorkflowHandle",
    "HandlerUnfinishedPolicy",
    "Info",
    "ParentClosePolicy",
    "ParentInfo",
    "all_handlers_finished",
    "continue_as_new",
    "defn",
    "deprecate_patch",
    "execute_activity",
    "execute_activity_method",
    "execute_child_workflow",
    "execute_local_activity",
    "execute_local_activity_method",
    "get_external_workflow_handle",
    "info",
    "is_replaying",
    "memo",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "side_effect",
    "signal",
    "sleep",
    "start_activity",
    "start_activity_method",
    "start_child_workflow",
    "start_local_activity",
    "start_local_activity_method",
    "update",
    "upsert_search_attributes",
    "uuid4",
    "wait_condition",
]


def all_handlers_finished() -> bool:
    """No accepted update handler and no async signal handler is still running:
    ``await workflow.wait_condition(workflow.all_handlers_finished)`` before returning lets
    them complete (an update's caller otherwise gets WorkflowAlreadyClosedError, and the
    worker logs a warning naming the handlers still running)."""
    return current_instance().all_handlers_finished()


@overload
def execute_activity(
    activity: Callable[..., Awaitable[R]],
    *args: Any,
    activity_id: str | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    result_type: Any = None,
) -> Coroutine[Any, Any, R]: ...


@overload
def execute_activity(
    activity: Callable[..., R],
    *args: Any,
    activity_id: str | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    result_type: Any = None,
) -> Coroutine[Any, Any, R]: ...


@overload
def execute_activity(
    activity: str,
    *args: Any,
    activity_id: str | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    result_type: Any = None,
) -> Coroutine[Any, Any, Any]: ...


def execute_activity(
    activity: str | Callable[..., Any],
    *args: Any,
    activity_id: str | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    result_type: Any = None,
) -> Coroutine[Any, Any, Any]:
    """Run an activity and return its result; raises ActivityError when it finally fails.

    ``activity`` is an ``@activity.defn`` function or an activity type name. One of
    ``schedule_to_close_timeout`` and ``start_to_close_timeout`` is required. The task
    queue defaults to the workflow's own. When the awaiting code is cancelled (the
    workflow's cancellation, ``asyncio.wait_for``, ``task.cancel()``), ``cancellation_type``
    says whether the activity is asked to stop and whether the await waits for it to. The
    result is converted to the function's return annotation (``-> Receipt`` gives a
    ``Receipt``), or to ``result_type`` when given (the way to type the result of an
    activity called by name).

    Not a coroutine function of its own: it hands back the coroutine that waits for the
    activity (a second coroutine would stay alive with every activity a cached run waits
    for, for the collector to walk); an error of the call is raised where it is awaited.
    """
    try:
        return _schedule_activity(activity, args, activity_id, task_queue, schedule_to_close_timeout,
                                  schedule_to_start_timeout, start_to_close_timeout, heartbeat_timeout, retry_policy,
                                  cancellation_type, result_type)
    except Exception as err:  # noqa: BLE001 - raised where the call is awaited, as from a coroutine function
        return _raised(err)


async def _raised(err: BaseException) -> Any:
    raise err


def _schedule_activity(activity: str | Callable[..., Any], args: tuple[Any, ...], activity_id: str | None,
                       task_queue: str | None, schedule_to_close_timeout: timedelta | None,
                       schedule_to_start_timeout: timedelta | None, start_to_close_timeout: timedelta | None,
                       heartbeat_timeout: timedelta | None, retry_policy: RetryPolicy | None,
                       cancellation_type: ActivityCancellationType, result_type: Any) -> Coroutine[Any, Any, Any]:
    if schedule_to_close_timeout is None and start_to_close_timeout is None:
        raise ValueError(
            "execute_activity needs schedule_to_close_timeout or start_to_close_timeout "
            "(otherwise a lost activity would be waited for forever)"
        )
    attributes = {
        "activity_id": activity_id or "",
        "task_queue": task_queue or "",
        "schedule_to_close_timeout_ms": to_millis(schedule_to_close_timeout),
        "schedule_to_start_timeout_ms": to_millis(schedule_to_start_timeout),
        "start_to_close_timeout_ms": to_millis(start_to_close_timeout),
        "heartbeat_timeout_ms": to_millis(heartbeat_timeout),
        "retry_policy": retry_policy.to_avro() if retry_policy is not None else None,
    }
    if result_type is None and not isinstance(activity, str):
        result_type = signature_of(activity).result
    return current_instance().outbound.execute_activity(ScheduleActivityInput(
        activity_name_of(activity), args, attributes, ActivityCancellationType(cancellation_type), result_type))


#: Temporal's name for ``execute_activity`` of an activity that is a method
#: (``workflow.execute_activity_method(Inventory.reserve, ...)``); the same call here.
execute_activity_method = execute_activity


def start_activity(activity: str | Callable[..., Any], *args: Any, **options: Any) -> asyncio.Task[Any]:
    """Schedule an activity and return at once (Temporal's ``start_activity``): a task whose
    await gives the result (or raises ActivityError) and whose ``cancel()`` cancels the
    activity as ``cancellation_type`` says. Takes what ``execute_activity`` takes."""
    run: Callable[..., Awaitable[Any]] = execute_activity
    return asyncio.ensure_future(run(activity, *args, **options))


#: Temporal's name for ``start_activity`` of a method; the same call here.
start_activity_method = start_activity


def _child_attributes(id: str | None, task_queue: str | None, execution_timeout: timedelta | None,
                      run_timeout: timedelta | None, task_timeout: timedelta | None,
                      parent_close_policy: ParentClosePolicy, retry_policy: RetryPolicy | None = None
                      ) -> dict[str, Any]:
    """The StartChildWorkflowExecution attributes the options of a child give (one place for
    start_child_workflow and execute_child_workflow)."""
    return {
        "workflow_id": id or "",
        "task_queue": task_queue or "",
        "execution_timeout_ms": to_millis(execution_timeout),
        "run_timeout_ms": to_millis(run_timeout),
        "workflow_task_timeout_ms": to_millis(task_timeout),
        "parent_close_policy": ParentClosePolicy(parent_close_policy).value,
        "retry_policy": retry_policy.to_avro() if retry_policy is not None else None,
    }


@overload
async def execute_local_activity(
    activity: Callable[..., Awaitable[R]],
    *args: Any,
    activity_id: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> R: ...


@overload
async def execute_local_activity(
    activity: Callable[..., R],
    *args: Any,
    activity_id: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> R: ...


@overload
async def execute_local_activity(
    activity: str,
    *args: Any,
    activity_id: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> Any: ...


async def execute_local_activity(
    activity: str | Callable[..., Any],
    *args: Any,
    activity_id: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> Any:
    """Run an activity in this worker, inside the current workflow task, and return its result;
    raises ActivityError when it finally fails (README, "Local activities").

    No round trip through matching and no activity events: the outcome is recorded in
    history as a marker, and a replay takes it from there without running the activity
    again. For short work (a lookup, a validation) that must be retried but does not deserve
    a task of its own. ``activity`` is an ``@activity.defn`` function (it need not be
    registered on the worker) or the name of one registered there. One of the timeouts is
    required. Retries follow ``retry_policy`` (default: the server's activity policy) within
    the task; a backoff longer than what is left of the task's budget (80% of the workflow
    task timeout) is waited out on a durable timer, and the next attempt runs in a later
    task. Arguments and result go through the data converter as an activity's do.
    """
    if schedule_to_close_timeout is None and start_to_close_timeout is None:
        raise ValueError("execute_local_activity needs schedule_to_close_timeout or start_to_close_timeout")
    if result_type is None and not isinstance(activity, str):
        result_type = signature_of(activity).result
    return await current_instance().outbound.execute_local_activity(ScheduleLocalActivityInput(
        activity_name_of(activity), None if isinstance(activity, str) else activity, args, activity_id,
        to_millis(start_to_close_timeout), to_millis(schedule_to_close_timeout),
        retry_policy.to_avro() if retry_policy is not None else None, result_type))


#: Temporal's name for ``execute_local_activity`` of a method; the same call here (a
#: method the worker was given bound runs on the worker's object).
execute_local_activity_method = execute_local_activity


def start_local_activity(activity: str | Callable[..., Any], *args: Any, **options: Any) -> asyncio.Task[Any]:
    """Ask for a local activity and return at once (Temporal's ``start_local_activity``): a
    task whose await gives the result; takes what ``execute_local_activity`` takes."""
    run: Callable[..., Awaitable[Any]] = execute_local_activity
    return asyncio.ensure_future(run(activity, *args, **options))


#: Temporal's name for ``start_local_activity`` of a method; the same call here.
start_local_activity_method = start_local_activity


@overload
async def start_child_workflow(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> ChildWorkflowHandle[R]: ...


@overload
async def start_child_workflow(
    workflow: str | type,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> ChildWorkflowHandle[Any]: ...


async def start_child_workflow(
    workflow: str | type | Callable[..., Any],
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> ChildWorkflowHandle[Any]:
    """Start a child workflow and return its handle once it has started.

    ``workflow`` is a ``@workflow.defn`` class, its run method or a workflow type name. The
    child runs in this namespace, on ``task_queue`` (default: this workflow's), with workflow
    id ``id`` (default: derived from this run). ``await handle`` gives its result or raises
    :class:`~kadence.exceptions.ChildWorkflowError` (whose ``cause`` is why: the child's
    failure, a timeout, a termination); a start that failed (another run of ``id`` is open)
    raises that error here, with a cause of type ``WorkflowAlreadyStarted``.
    ``parent_close_policy`` says what happens to the child if this run closes first.
    ``retry_policy``: a run of the child that fails or times out is retried as a new run
    (its ``workflow.info().attempt`` counts them); this workflow sees only the last run's
    outcome (README, "Workflow retry policy").
    """
    attributes = _child_attributes(id, task_queue, execution_timeout, run_timeout, task_timeout,
                                   parent_close_policy, retry_policy)
    return await current_instance().outbound.start_child_workflow(StartChildWorkflowInput(
        workflow_name_of(workflow), args, attributes, run_result_type(workflow)))


@overload
async def execute_child_workflow(
    workflow: Callable[..., Awaitable[R]],
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> R: ...


@overload
async def execute_child_workflow(
    workflow: str | type,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> Any: ...


async def execute_child_workflow(
    workflow: str | type | Callable[..., Any],
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    retry_policy: RetryPolicy | None = None,
) -> Any:
    """Start a child workflow and wait for its result (see :func:`start_child_workflow`)."""
    handle = await start_child_workflow(
        workflow, *args, id=id, task_queue=task_queue, execution_timeout=execution_timeout,
        run_timeout=run_timeout, task_timeout=task_timeout, parent_close_policy=parent_close_policy,
        retry_policy=retry_policy)
    return await handle


def get_external_workflow_handle(workflow_id: str, run_id: str | None = None) -> ExternalWorkflowHandle:
    """A handle on workflow ``workflow_id`` of this workflow's namespace (its run ``run_id``,
    or its current run): ``await handle.signal(...)`` and ``await handle.cancel()`` return
    once the target recorded them and raise ApplicationError of type
    ``SignalExternalWorkflowExecutionFailed`` when it has no such open run. A workflow may
    signal itself this way but not cancel itself: ``cancel()`` on its own run raises
    ApplicationError of type ``CancelExternalWorkflowExecutionFailed`` at once. There is no
    namespace parameter: a workflow reaches only its own namespace."""
    return ExternalWorkflowHandle(current_instance().children, workflow_id, run_id)


async def sleep(duration: float | timedelta) -> None:
    """Wait on a durable timer (``asyncio.sleep`` in workflow code does the same)."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    # current_instance() fails clearly outside workflow code rather than sleeping for real.
    await current_instance().outbound.sleep(SleepInput(seconds))


async def wait_condition(check: Callable[[], bool], *, timeout: float | timedelta | None = None) -> None:
    """Wait until ``check()`` is true; ``timeout`` (a durable timer) raises TimeoutError."""
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    await current_instance().wait_condition(check, seconds)


def now() -> datetime:
    """The time the current workflow task was handed to its worker (UTC), identical on every replay."""
    return current_instance().now()


def random() -> _random.Random:
    """A random generator seeded from the run id: the same numbers on every replay."""
    return current_instance().random


def uuid4() -> _uuid.UUID:
    """A version-4 UUID drawn from :func:`random`, so replay gets the same value."""
    return _uuid.UUID(int=current_instance().random.getrandbits(128), version=4)


def info() -> Info:
    """Who and where this workflow run is."""
    return current_instance().info()


def memo() -> dict[str, Any]:
    """The memo the run was started with (``start_workflow(..., memo={...})``), carried over
    on continue-as-new; an empty dict if none. A copy: changing it changes nothing."""
    return dict(current_instance().info().memo)


def side_effect(fn: Callable[[], T], *, result_type: Any = None) -> T:
    """``fn()``'s value, computed once and recorded in history (a marker); replays return
    the recorded value without calling ``fn``. For a small non-deterministic value (a
    generated id, a config read); anything slow or failing belongs in an activity. The
    value goes through the data converter, typed by ``fn``'s return annotation (or
    ``result_type``)."""
    if result_type is None:
        result_type = signature_of(fn).result
    value: T = current_instance().side_effect(fn, result_type)
    return value


def is_replaying() -> bool:
    """True while code re-runs a workflow task already recorded in history (e.g. to skip logging)."""
    return current_instance().is_replaying()


def patched(patch_id: str) -> bool:
    """Whether to take the new code path for change ``patch_id``.

    True for runs that reach this point with the new code (a marker is recorded); False
    when replaying a run that passed this point before the change was deployed.
    """
    return current_instance().patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Say that only the new code path of change ``patch_id`` is left (every run that took
    the old one has closed): the ``if workflow.patched(patch_id)`` and its old branch are gone.

    Runs that recorded the patch still replay, and the marker this records (marked
    deprecated) lets a later deploy drop this call too: code that no longer asks about a
    deprecated patch replays past its markers. As Temporal's ``deprecate_patch``.
    """
    current_instance().deprecate_patch(patch_id)


def upsert_search_attributes(attributes: Mapping[str, Any]) -> None:
    """Set custom search attributes of this run's visibility row (README, "Finding workflows").

    Each name must be registered in the namespace with its type; values are strings, numbers,
    booleans, datetimes or lists of strings. Attributes not named keep their values. Recorded
    in the run's history (a marker), so replay does it again; a value the registry refuses
    fails the workflow task (cause ``BadSearchAttributes``), as a code error does.
    """
    current_instance().upsert_search_attributes(attributes)


def continue_as_new(*args: Any, workflow_type: str | None = None, task_queue: str | None = None,
                    memo: Mapping[str, Any] | None = None,
                    search_attributes: Mapping[str, Any] | None = None) -> NoReturn:
    """End this run and start a new one of the same workflow with ``args`` (never returns);
    the new run keeps this run's memo unless ``memo`` replaces it. ``search_attributes``:
    the new run's (registered in the namespace, as at start); without them it keeps this
    run's (``workflow.info().search_attributes``), as in Temporal; ``{}`` gives it none."""
    current_instance().outbound.continue_as_new(ContinueAsNewInput(args, workflow_type, task_queue, memo,
                                                                   search_attributes))
