"""Interceptors: code of yours around the SDK's calls, for logging, auth headers, metrics, tracing.

An :class:`Interceptor` given to ``Client(..., interceptors=[...])`` or ``Worker(...,
interceptors=[...])`` (a worker also uses its client's) hooks into up to five chains; each
hook returns the next link, usually a subclass of the base class wrapping ``next``. Every
base method passes the call on unchanged, so a subclass overrides only what it needs. The
first interceptor of the list is the outermost (it sees a call first and its result last).

- :class:`ClientOutboundInterceptor` (:meth:`Interceptor.intercept_client`): start
  (execute), signal, query, update, cancel and terminate of workflows. Each input has
  ``headers``, HTTP headers sent with that call (an auth header, a tenant); raising refuses
  the call before anything is sent.
- :class:`WorkflowInboundInterceptor` (:meth:`Interceptor.workflow_interceptor_class`, one
  instance per workflow run, so it may keep per-run state): running the workflow, and
  handling its signals, queries, update validators and updates. Its :meth:`~WorkflowInboundInterceptor.init`
  may wrap the :class:`WorkflowOutboundInterceptor`: what workflow code asks of the SDK
  (activities, local activities, child workflows, ``workflow.sleep``, continue-as-new).
  Workflow interceptors run inside the workflow, on replay too: they must be deterministic
  (``workflow.is_replaying()`` tells a replay, e.g. to log once).
- :class:`ActivityInboundInterceptor` (:meth:`Interceptor.intercept_activity`): each
  activity attempt, local activities' too (``activity.info()`` works inside).
- :class:`WorkerTaskInterceptor` (:meth:`Interceptor.intercept_task`): each task a worker
  runs (workflow task, query, activity attempt, workflow task run ahead), around the whole
  of it, its answer included.

The SDK's own OpenTelemetry spans (client calls, worker tasks) come from an interceptor too
(:class:`kadence._tracing_interceptor.TracingInterceptor`), which every client and worker
puts first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

from kadence.common import (
    ActivityCancellationType,
    RetryPolicy,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

if TYPE_CHECKING:
    from kadence._client import WorkflowHandle, WorkflowUpdateHandle
    from kadence._workflow.children import ChildWorkflowHandle

__all__ = [
    "ActivityInboundInterceptor",
    "CancelWorkflowInput",
    "ClientOutboundInterceptor",
    "ContinueAsNewInput",
    "ExecuteActivityInput",
    "ExecuteWorkflowInput",
    "HandleQueryInput",
    "HandleSignalInput",
    "HandleUpdateInput",
    "Interceptor",
    "QueryWorkflowInput",
    "ScheduleActivityInput",
    "ScheduleLocalActivityInput",
    "SignalWorkflowInput",
    "SleepInput",
    "StartChildWorkflowInput",
    "StartWorkflowInput",
    "StartWorkflowUpdateInput",
    "TaskKind",
    "TerminateWorkflowInput",
    "WorkerTaskInput",
    "WorkerTaskInterceptor",
    "WorkflowInboundInterceptor",
    "WorkflowOutboundInterceptor",
]


# -- the client ---------------------------------------------------------------------------


@dataclass
class StartWorkflowInput:
    """``Client.start_workflow`` / ``execute_workflow`` (``wait_for_result``: the latter,
    which asks the frontend to wait for the outcome in the same exchange) /
    ``signal_with_start_workflow`` (``start_signal`` set)."""

    workflow_type: str
    args: Sequence[Any]
    id: str
    task_queue: str
    execution_timeout: timedelta | None = None
    run_timeout: timedelta | None = None
    workflow_task_timeout: timedelta | None = None
    request_id: str | None = None
    id_reuse_policy: WorkflowIDReusePolicy | None = None
    id_conflict_policy: WorkflowIDConflictPolicy | None = None
    memo: Mapping[str, Any] | None = None
    search_attributes: Mapping[str, Any] | None = None
    cron_schedule: str | None = None
    retry_policy: RetryPolicy | None = None
    result_type: Any = None
    wait_for_result: bool = False
    start_signal: str | None = None
    start_signal_args: Sequence[Any] = ()
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SignalWorkflowInput:
    handle: WorkflowHandle
    signal: str
    args: Sequence[Any]
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class QueryWorkflowInput:
    handle: WorkflowHandle
    query: str
    args: Sequence[Any]
    result_type: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float | timedelta | None = None  # None: the server's (10 s)


@dataclass
class StartWorkflowUpdateInput:
    handle: WorkflowHandle
    update: str
    args: Sequence[Any]
    update_id: str
    wait_for_stage: str
    timeout: float | timedelta | None = None
    result_type: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class CancelWorkflowInput:
    handle: WorkflowHandle
    reason: str
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TerminateWorkflowInput:
    handle: WorkflowHandle
    reason: str
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class ClientOutboundInterceptor:
    """A link of the client's chain; the last one makes the call."""

    def __init__(self, next: ClientOutboundInterceptor) -> None:
        self.next = next

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle:
        return await self.next.start_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        await self.next.signal_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        return await self.next.query_workflow(input)

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle:
        return await self.next.start_workflow_update(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        await self.next.cancel_workflow(input)

    async def terminate_workflow(self, input: TerminateWorkflowInput) -> None:
        await self.next.terminate_workflow(input)


# -- workflows ----------------------------------------------------------------------------


@dataclass
class ExecuteWorkflowInput:
    workflow_type: str
    run_fn: Callable[..., Awaitable[Any]]  # the run method, bound to the workflow object
    args: Sequence[Any]


@dataclass
class HandleSignalInput:
    signal: str
    handler: Callable[..., Any]  # bound to the workflow object
    args: Sequence[Any]


@dataclass
class HandleQueryInput:
    query: str
    handler: Callable[..., Any]
    args: Sequence[Any]


@dataclass
class HandleUpdateInput:
    update: str
    update_id: str
    handler: Callable[..., Any]  # the handler, or the validator in handle_update_validator
    args: Sequence[Any]


@dataclass
class ScheduleActivityInput:
    """``workflow.execute_activity``: ``options`` are the ScheduleActivityTask attributes
    (``task_queue``, ``start_to_close_timeout_ms``, ``retry_policy`` ...), changeable."""

    activity_type: str
    args: Sequence[Any]
    options: dict[str, Any]
    cancellation_type: ActivityCancellationType
    result_type: Any = None


@dataclass
class ScheduleLocalActivityInput:
    activity_type: str
    fn: Callable[..., Any] | None  # None: called by name
    args: Sequence[Any]
    activity_id: str | None
    start_to_close_ms: int
    schedule_to_close_ms: int
    retry_policy: Mapping[str, Any] | None
    result_type: Any = None


@dataclass
class StartChildWorkflowInput:
    """``workflow.start_child_workflow``: ``options`` are the StartChildWorkflowExecution attributes."""

    workflow_type: str
    args: Sequence[Any]
    options: dict[str, Any]
    result_type: Any = None


@dataclass
class SleepInput:
    seconds: float


@dataclass
class ContinueAsNewInput:
    args: Sequence[Any]
    workflow_type: str | None
    task_queue: str | None
    memo: Mapping[str, Any] | None
    search_attributes: Mapping[str, Any] | None = None


class WorkflowOutboundInterceptor:
    """What workflow code asks of the SDK; the last link does it."""

    def __init__(self, next: WorkflowOutboundInterceptor) -> None:
        self.next = next

    async def execute_activity(self, input: ScheduleActivityInput) -> Any:
        return await self.next.execute_activity(input)

    async def execute_local_activity(self, input: ScheduleLocalActivityInput) -> Any:
        return await self.next.execute_local_activity(input)

    async def start_child_workflow(self, input: StartChildWorkflowInput) -> ChildWorkflowHandle[Any]:
        return await self.next.start_child_workflow(input)

    async def sleep(self, input: SleepInput) -> None:
        await self.next.sleep(input)

    def continue_as_new(self, input: ContinueAsNewInput) -> NoReturn:
        self.next.continue_as_new(input)


class WorkflowInboundInterceptor:
    """What reaches a workflow run; the last link calls the workflow's code.

    Signal and update handlers may be plain functions: ``handle_signal`` and
    ``handle_update`` return what the handler returned (a value, or an awaitable for an
    ``async def`` handler) and must stay synchronous, so that a plain handler still runs
    at once, as without interceptors (replay depends on that order).
    """

    def __init__(self, next: WorkflowInboundInterceptor) -> None:
        self.next = next

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        """Called once, before anything else: wrap ``outbound`` and pass it on."""
        self.next.init(outbound)

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        return await self.next.execute_workflow(input)

    def handle_signal(self, input: HandleSignalInput) -> Any:
        return self.next.handle_signal(input)

    def handle_query(self, input: HandleQueryInput) -> Any:
        return self.next.handle_query(input)

    def handle_update_validator(self, input: HandleUpdateInput) -> None:
        self.next.handle_update_validator(input)

    def handle_update(self, input: HandleUpdateInput) -> Any:
        return self.next.handle_update(input)


# -- activities and worker tasks --------------------------------------------------------------


@dataclass
class ExecuteActivityInput:
    fn: Callable[..., Any]
    args: Sequence[Any]
    is_local: bool = False
    #: The task's trace context and similar (``traceparent``), read-only.
    headers: Mapping[str, str] = field(default_factory=dict)


class ActivityInboundInterceptor:
    """An activity attempt; the last link runs the function (a sync one in the executor)."""

    def __init__(self, next: ActivityInboundInterceptor) -> None:
        self.next = next

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await self.next.execute_activity(input)


class TaskKind(StrEnum):
    WORKFLOW = "workflow"
    QUERY = "query"
    ACTIVITY = "activity"
    #: A workflow task run on an activity's result before history scheduled it.
    RAN_AHEAD = "ran_ahead"


@dataclass(frozen=True)
class WorkerTaskInput:
    kind: TaskKind
    #: The task as the poll answered it (workflow_id, run_id, workflow_type, activity_type,
    #: attempt, traceparent ...): read it, do not change it.
    task: Mapping[str, Any]
    namespace: str
    task_queue: str


class WorkerTaskInterceptor:
    """One task a worker runs, its answer included."""

    def __init__(self, next: WorkerTaskInterceptor) -> None:
        self.next = next

    async def run_task(self, input: WorkerTaskInput) -> None:
        await self.next.run_task(input)


class Interceptor:
    """Hooks into the chains (see the module docstring); each default leaves a chain as it is."""

    def intercept_client(self, next: ClientOutboundInterceptor) -> ClientOutboundInterceptor:
        return next

    def workflow_interceptor_class(self) -> type[WorkflowInboundInterceptor] | None:
        return None

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return next

    def intercept_task(self, next: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
        return next


def chain_client(interceptors: Sequence[Interceptor], root: ClientOutboundInterceptor) -> ClientOutboundInterceptor:
    link = root
    for interceptor in reversed(interceptors):
        link = interceptor.intercept_client(link)
    return link


def chain_activity(interceptors: Sequence[Interceptor],
                   root: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
    link = root
    for interceptor in reversed(interceptors):
        link = interceptor.intercept_activity(link)
    return link


def chain_task(interceptors: Sequence[Interceptor], root: WorkerTaskInterceptor) -> WorkerTaskInterceptor:
    link = root
    for interceptor in reversed(interceptors):
        link = interceptor.intercept_task(link)
    return link


def chain_workflow(interceptors: Sequence[Interceptor], root: WorkflowInboundInterceptor,
                   outbound: WorkflowOutboundInterceptor) -> WorkflowInboundInterceptor:
    """A run's inbound chain (a new interceptor object per run), initialised with ``outbound``."""
    link = root
    for interceptor in reversed(interceptors):
        cls = interceptor.workflow_interceptor_class()
        if cls is not None:
            link = cls(link)
    link.init(outbound)
    return link
