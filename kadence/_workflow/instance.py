"""One live workflow run inside the SDK: the user's object, its loop, and its decisions.

An *activation* delivers the input events one workflow task sees (start, signals,
activity results, timer firings), runs workflow code until it blocks, and returns the
commands the code decided, in order. Which events go to which activation, and checking
the commands against history, is :mod:`kadence._workflow.runner`'s job.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kadence._converter import decode_args, encode_value
from kadence._failure import exception_from_failure, failure_from_exception
from kadence._workflow.children import CHILD_INPUT_EVENT_TYPES, Children
from kadence._workflow.definition import WorkflowDefinition, unfinished_policy_of
from kadence._workflow.interception import ChainEnds
from kadence._workflow.local_activities import LocalActivities, LocalActivityOutcome, LocalActivityRequest
from kadence._workflow.loop import WorkflowEventLoop
from kadence._workflow.stack import stack_trace
from kadence.common import ActivityCancellationType, HandlerUnfinishedPolicy, RetryPolicy, RetryState
from kadence.converter import DataConverter, default_converter, signature_of
from kadence.exceptions import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    CanceledError,
    FailureError,
    NonDeterminismError,
    PayloadError,
    WorkflowTaskError,
)
from kadence.interceptor import (
    ExecuteWorkflowInput,
    HandleQueryInput,
    HandleSignalInput,
    HandleUpdateInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowOutboundInterceptor,
    chain_workflow,
)
from kadence_protocol.enums import RETRYABLE_TIMEOUTS, CommandType, EventType
from kadence_protocol.queries import STACK_TRACE_QUERY, UPDATE_RESULT_NAME

__all__ = ["Command", "ContinueAsNewError", "WorkflowInfo", "WorkflowInstance", "current_instance"]

_log = logging.getLogger(__name__)
#: The input an activation gets for an update request a worker was handed (not a history event).
UPDATE_REQUESTED = "UpdateRequested"
# Read once: on CPython 3.11 an enum member read through its class takes the enum metaclass's
# slow attribute hook, and these are compared per input event (a timer's firing after them all).
_STARTED = EventType.WORKFLOW_EXECUTION_STARTED
_SIGNALED = EventType.WORKFLOW_EXECUTION_SIGNALED
_CANCEL_REQUESTED = EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED
_UPDATE_ACCEPTED = EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED
_TIMER_FIRED = EventType.TIMER_FIRED
# Made once: on CPython 3.11 each read of an enum member through its class goes through the
# enum metaclass's slow attribute hook, and a tuple written inline reads them all per event.
_ACTIVITY_OUTCOMES = frozenset({EventType.ACTIVITY_TASK_COMPLETED, EventType.ACTIVITY_TASK_FAILED,
                                EventType.ACTIVITY_TASK_TIMED_OUT, EventType.ACTIVITY_TASK_CANCELED})
_RETRIED_OUTCOMES = frozenset({EventType.ACTIVITY_TASK_FAILED, EventType.ACTIVITY_TASK_TIMED_OUT})
PATCH_MARKER_PREFIX = "patch:"
SIDE_EFFECT_MARKER_PREFIX = "side_effect:"


def timer_requested_time() -> int:
    """A StartTimer's ``requested_time``: the wall clock now, in ms, rounded up (a time
    rounded down would let the timer fire a fraction of a millisecond early)."""
    return math.ceil(time.time() * 1000)


def timer_duration_ms(delay_seconds: float) -> int:
    """A StartTimer's duration in whole ms, rounded up (a duration rounded to the nearest let
    ``sleep(d)`` return up to half a millisecond before ``d``), at least 1. The float's own
    error (``0.3 * 1000`` is a hair over 300) is not rounded up to a millisecond more."""
    return max(1, math.ceil(delay_seconds * 1000 - 1e-6))


@dataclass(frozen=True)
class Command:
    """One decision of workflow code, as a ``kadence.Command`` record.

    ``on_recorded`` is told the id of the history event the command became, once the
    runner has matched it (activities need it to route their results).
    """

    command_type: str
    attributes: Mapping[str, Any]
    on_recorded: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"command_type": self.command_type, "attributes": dict(self.attributes)}


@dataclass(frozen=True)
class ParentInfo:
    """The run that started a child workflow (``workflow.info().parent``)."""

    namespace: str
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class WorkflowInfo:
    """What a workflow knows about its own run (``workflow.info()``)."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int
    start_time: datetime
    execution_timeout: timedelta | None
    workflow_task_timeout: timedelta
    continued_run_id: str | None
    # The run's own timeout (None: none); execution_timeout bounds the whole chain.
    run_timeout: timedelta | None = None
    # The memo given at start (or carried over on continue-as-new): a dict, empty if none.
    memo: Mapping[str, Any] = field(default_factory=dict)
    #: Events in history when the current workflow task was scheduled (a task run ahead on
    #: an activity's result keeps the value of the task before it: it cannot know its own).
    history_length: int = 0
    #: The history's encoded size in bytes as of the same WorkflowTaskScheduled (same rule).
    history_size: int = 0
    #: Whether history asks the run to continue as new (it passed the warning threshold of
    #: its event count or size; past the hard limit the run is terminated). Same rule.
    continue_as_new_suggested: bool = False
    #: The attempt of the current workflow task: 1, or more while its code keeps failing
    #: (history retries it; only the first failure of a streak is in its events).
    workflow_task_attempt: int = 1
    #: The run that started this one as its child; None for a run started otherwise.
    parent: ParentInfo | None = None
    #: The retry policy the run was started with (a workflow's or a child's); None: none.
    retry_policy: RetryPolicy | None = None
    #: The run's search attributes as the API answers them (datetimes as ISO 8601 text):
    #: its start's, with this run's ``upsert_search_attributes`` merged in.
    search_attributes: Mapping[str, Any] = field(default_factory=dict)


class ContinueAsNewError(BaseException):
    """Raised by ``workflow.continue_as_new``; ends this run and starts a fresh one.

    A BaseException so that a broad ``except Exception`` in workflow code cannot swallow it.
    """

    def __init__(self, args: Sequence[Any], workflow_type: str | None, task_queue: str | None,
                 memo: Mapping[str, Any] | None = None,
                 search_attributes: Mapping[str, Any] | None = None) -> None:
        super().__init__("continue as new")
        self.run_args = tuple(args)
        self.workflow_type = workflow_type
        self.task_queue = task_queue
        self.memo = memo  # None: the new run keeps this run's memo
        self.search_attributes = search_attributes  # None: the new run keeps this run's


class _PendingActivity(asyncio.Future[Any]):
    """An activity workflow code waits for: the future its outcome resolves, and what the
    instance knows of it (one object: a record beside the future was one more per waiting
    activity for the collector's passes over cached runs)."""

    __slots__ = ("activity_id", "activity_type", "result_type", "retry_policy", "scheduled_event_id", "settled",
                 "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, activity_id: str, activity_type: str,
                 retry_policy: Mapping[str, Any] | None, *, result_type: Any,
                 waiting: dict[int, _PendingActivity]) -> None:
        super().__init__(loop=loop)
        self.activity_id = activity_id
        self.activity_type = activity_type
        self.retry_policy = retry_policy
        self.scheduled_event_id = 0  # known once history's events number the command
        # Set when the awaiting code was cancelled with WAIT_CANCELLATION_COMPLETED: resolved
        # when the activity's last event (canceled, completed, failed, timed out) comes.
        self.settled: asyncio.Future[None] | None = None
        self.result_type = result_type  # the type hint the result is decoded to (None: plain JSON)
        #: The instance's activities waiting for an outcome, by scheduled event id.
        self.waiting = waiting

    @property
    def future(self) -> asyncio.Future[Any]:
        """What the awaiting code waits on: this record itself."""
        return self

    def __call__(self, event_id: int) -> None:
        """History numbered the command: the record is its Command.on_recorded itself (a bound
        method would be one more object per waiting activity for the collector to walk)."""
        self.scheduled_event_id = event_id
        # A run ahead may have delivered the result before the numbering.
        if not self.future.done() or self.settled is not None:
            self.waiting[event_id] = self

    def retry_state(self, cause: FailureError) -> RetryState:
        """Why history made no further attempt after the last one: the cases of the
        server's retry rule (services/history/engine.py retry_backoff) in its order."""
        policy = self.retry_policy or {}
        if isinstance(cause, ActivityTimeoutError):
            if cause.timeout_type not in RETRYABLE_TIMEOUTS:
                return RetryState.TIMEOUT
        elif isinstance(cause, ApplicationError) and (
                cause.non_retryable or cause.type in (policy.get("non_retryable_error_types") or ())):
            return RetryState.NON_RETRYABLE_FAILURE
        if policy.get("maximum_attempts"):
            return RetryState.MAXIMUM_ATTEMPTS_REACHED
        return RetryState.TIMEOUT  # the schedule-to-close time would pass before the next attempt


def _memo(value: Any) -> dict[str, Any]:
    """The memo as workflow code sees it: the decoded object, or an empty dict."""
    return dict(value) if isinstance(value, dict) else {}


def _parent(attrs: Mapping[str, Any]) -> ParentInfo | None:
    """The parent named by a run's WorkflowExecutionStarted, if it is a child."""
    if not attrs.get("parent_workflow_id"):
        return None
    return ParentInfo(namespace=str(attrs.get("parent_namespace") or ""), workflow_id=str(attrs["parent_workflow_id"]),
                      run_id=str(attrs.get("parent_run_id") or ""))


def _retry_policy(record: Any) -> RetryPolicy | None:
    """A ``kadence.RetryPolicy`` record (durations in ms) as the SDK's RetryPolicy."""
    if not isinstance(record, Mapping):
        return None
    maximum = int(record.get("maximum_interval_ms") or 0)
    return RetryPolicy(initial_interval=timedelta(milliseconds=int(record.get("initial_interval_ms") or 1000)),
                       backoff_coefficient=float(record.get("backoff_coefficient") or 2.0),
                       maximum_interval=timedelta(milliseconds=maximum) if maximum else None,
                       maximum_attempts=int(record.get("maximum_attempts") or 0),
                       non_retryable_error_types=tuple(record.get("non_retryable_error_types") or ()))


async def _raised(exc: BaseException) -> Any:
    """A run method whose call raised: the error comes out of the run's task."""
    raise exc


def _unhook_waits(task: asyncio.Future[Any] | None) -> None:
    """Take a discarded task's wake-up off the future it waits for, and so on down a chain
    of tasks awaiting tasks; the task never runs again (its loop is closed)."""
    for _ in range(100):  # bounded: a chain of awaited tasks is short
        if not isinstance(task, asyncio.Task) or task.done():
            return
        waiter: asyncio.Future[Any] | None = getattr(task, "_fut_waiter", None)
        if waiter is None:
            return
        for callback, _context in list(getattr(waiter, "_callbacks", None) or ()):
            if getattr(callback, "__self__", None) is task:
                waiter.remove_done_callback(callback)
        task = waiter


def _unregister_task(task: asyncio.Task[Any]) -> None:
    """Take ``task`` out of asyncio's registry of all tasks where this Python has one to take
    it from (a private hook of asyncio: absent, the task stays registered, which is harmless)."""
    unregister = getattr(asyncio.tasks, "_unregister_task", None)
    if unregister is not None:
        unregister(task)


def _run_done(task: asyncio.Task[Any]) -> None:
    """The run's task is done: its instance (the owner of the task's loop) takes it from there."""
    owner = task.get_loop().owner  # type: ignore[attr-defined]  # (typing.cast: a call per run)
    if isinstance(owner, WorkflowInstance):  # else the loop is closed: the run was discarded
        owner._on_run_done(task)


def current_instance() -> WorkflowInstance:
    """The workflow instance whose code is running; a clear error outside workflow code."""
    loop = asyncio._get_running_loop()
    owner = loop.owner if isinstance(loop, WorkflowEventLoop) else None
    if not isinstance(owner, WorkflowInstance):
        # RuntimeError, not TypeError: the caller is in the wrong place, not passing a wrong type.
        raise RuntimeError("not in workflow code: this function may only be called from a workflow")  # noqa: TRY004
    return owner


class WorkflowInstance:
    """A workflow object running on its own deterministic loop."""

    # Slots: with more attributes than CPython's shared key tables hold (30 on 3.11), each
    # instance's attributes were a dict of their own, one more object per cached run.
    __slots__ = (
        "__weakref__", "_activities", "_activity_seq", "_buffered_signals", "_children", "_commands", "_conditions",
        "_handler_tasks", "_inbound", "_info", "_local_activities", "_now_ms", "_obj", "_outbound",
        "_patches", "_random", "_recorded", "_replaying", "_run_task", "_running_updates",
        "_side_effect_seq", "_task_error", "_timer_seq", "cancel_requested", "continue_as_new_suggested", "converter",
        "definition", "finished", "history_length", "history_size", "loop", "namespace", "run_id", "seed_run_id",
        "workflow_id", "workflow_task_attempt",
    )

    def __init__(self, definition: WorkflowDefinition, *, namespace: str, workflow_id: str, run_id: str,
                 data_converter: DataConverter | None = None, interceptors: Sequence[Interceptor] = ()) -> None:
        self.definition = definition
        # Payloads reach this instance with any codec already undone (by the worker).
        self.converter = data_converter or default_converter()
        self.namespace = namespace
        self.workflow_id = workflow_id
        self.run_id = run_id
        # typeshed marks the I/O methods abstract; at runtime they raise NotImplementedError,
        # which is exactly what workflow code reaching for I/O should get.
        self.loop = WorkflowEventLoop(self)  # type: ignore[abstract]
        # Seeded from the run id alone so every replay draws the same numbers.
        self.seed_run_id = run_id
        # Made on first use: seeding a Mersenne Twister (and random.Random()'s read of
        # os.urandom) cost 6 % of a worker's CPU per workflow, most of which never draw.
        self._random: random.Random | None = None
        self.finished = False
        self._obj: Any = None
        self._info: WorkflowInfo | None = None
        self._commands: list[Command] = []
        self._activity_seq = 0
        self._timer_seq = 0
        self._activities: dict[int, _PendingActivity] = {}
        # Lists made on first use (None until then): a cached run's objects are what the
        # collector's full passes walk, and most runs wait on no condition.
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] | None = None
        self._buffered_signals: list[tuple[str, list[Any]]] | None = None
        self._patches: dict[str, bool] = {}
        self._now_ms = 0
        self._replaying = False
        self._recorded: Sequence[Mapping[str, Any]] = ()
        self._task_error: BaseException | None = None
        self._run_task: asyncio.Task[Any] | None = None
        # wake(): the run's main method returned during the wake; what the SDK does with
        # that (in its context) waits for finish_wake().
        self.cancel_requested = False
        self._running_updates = 0  # accepted update handlers not finished yet
        # Async signal and update handlers running: (kind, name, policy) by task; made on
        # first use, like the others below, so that a cached run holds no more objects.
        self._handler_tasks: dict[asyncio.Task[Any], tuple[str, str, HandlerUnfinishedPolicy]] | None = None
        #: Set by the runner before each activation (see WorkflowInfo.history_length).
        self.history_length = 0
        self.history_size = 0
        self.continue_as_new_suggested = False
        self.workflow_task_attempt = 1
        self._side_effect_seq = 0
        # Made on first use: most runs have neither, and a cached run's objects are what
        # the collector's full passes walk.
        self._children: Children | None = None
        self._local_activities: LocalActivities | None = None
        # The interceptors' chains (kadence/interceptor.py); init() sets self.outbound. Without
        # workflow interceptors (the SDK's tracing has none) their ends are made per call (see
        # inbound): kept, they and their weak reference to this instance were two more objects
        # per cached run.
        self._outbound: WorkflowOutboundInterceptor | None = None
        self._inbound: WorkflowInboundInterceptor | None = None
        if any(i.workflow_interceptor_class() is not None for i in interceptors):
            ends = ChainEnds(self)
            self._outbound = ends
            self._inbound = chain_workflow(interceptors, ends, ends)

    @property
    def inbound(self) -> WorkflowInboundInterceptor:
        """The inbound chain's outermost link: the calls into the workflow's code."""
        return self._inbound if self._inbound is not None else ChainEnds(self)

    @property
    def outbound(self) -> WorkflowOutboundInterceptor:
        """The outbound chain's outermost link: what workflow code asks of the SDK."""
        return self._outbound if self._outbound is not None else ChainEnds(self)

    @outbound.setter
    def outbound(self, link: WorkflowOutboundInterceptor) -> None:
        self._outbound = link

    def reseed(self, run_id: str) -> None:
        """Draw random numbers (and default child ids) as run ``run_id`` did. A run made by a
        reset replays its copied events with the seed of the run they were copied from and
        goes on with its own from the reset (the runner calls this, see WorkflowRunner.apply)."""
        self.seed_run_id = run_id
        if self._random is not None:  # already drawn from: the same generator goes on, reseeded
            self._random.seed(self._seed())

    def _seed(self) -> int:
        return int.from_bytes(hashlib.sha256(self.seed_run_id.encode()).digest()[:8], "big")

    @property
    def random(self) -> random.Random:
        """The run's random generator, seeded from ``seed_run_id`` (see :meth:`reseed`)."""
        if self._random is None:
            self._random = random.Random(self._seed())
        return self._random

    @property
    def children(self) -> Children:
        """The run's child workflows and signals to other runs."""
        if self._children is None:
            self._children = Children(self)
        return self._children

    @property
    def local_activities(self) -> LocalActivities:
        """The run's local activities."""
        if self._local_activities is None:
            self._local_activities = LocalActivities(self)
        return self._local_activities

    # -- activation ------------------------------------------------------------------

    def activate(
        self,
        inputs: Sequence[Mapping[str, Any]],
        *,
        time_ms: int,
        recorded: Sequence[Mapping[str, Any]] | None,
    ) -> list[Command]:
        """Deliver ``inputs``, run the code until it blocks, return the new commands.

        ``recorded`` is the command events history holds for this workflow task when it is
        being replayed, None when it runs for the first time. Raises WorkflowTaskError when
        the code failed in a way that should fail the workflow task.
        """
        self._begin(time_ms, recorded)
        previous = self._enter()
        try:
            self._deliver_and_run(inputs)
            # Replayed, local activities take their outcomes from the task's markers, in the
            # same rounds as when the task ran live (see resolve_local_activities).
            while self._replaying and self._task_error is None and not self.finished \
                    and self._local_activities is not None \
                    and self._local_activities.resolve_from_history(self._recorded):
                self._run_until_blocked()
        finally:
            asyncio._set_running_loop(previous)
        return self._commands_or_error()

    def wake(self, inputs: Sequence[Mapping[str, Any]], *, time_ms: int) -> None:
        """The first half of a live :meth:`activate` (the second is :meth:`finish_wake`): deliver
        ``inputs`` and run the code until it blocks, except that when the run's main method
        returns, the loop pauses right there, before the SDK turns its outcome into the
        closing command. A worker waking many runs at once resumes all their code first;
        the two halves run the same callbacks in the same order as one activation."""
        self._begin(time_ms, None)
        self.loop.pause_when_scheduled(_run_done)
        previous = self._enter()
        try:
            self._deliver_and_run(inputs)
        finally:
            self.loop.pause_when_scheduled(None)
            asyncio._set_running_loop(previous)

    def wake_timer(self, timer_id: str, *, time_ms: int) -> None:
        """:meth:`wake` on the firing of user timer ``timer_id`` alone, as delivering its
        TimerFired event does, without making the event: a worker waking thousands of runs
        due together does this for each before the last one's code resumes."""
        self._begin(time_ms, None)
        self.loop.pause_when_scheduled(_run_done)
        previous = self._enter()
        try:
            self._timer_fired(timer_id)
            if self._task_error is None:
                self._run_until_blocked()
        finally:
            self.loop.pause_when_scheduled(None)
            asyncio._set_running_loop(previous)

    def finish_wake(self) -> list[Command]:
        """The rest of the activation :meth:`wake` began; returns its commands (or raises, as
        :meth:`activate` does)."""
        if self.loop.paused:  # at the run's main method's return, its outcome ready to take
            previous = self._enter()
            try:
                self.loop.unpause()
                self._run_until_blocked()
            finally:
                asyncio._set_running_loop(previous)
        return self._commands_or_error()

    def _begin(self, time_ms: int, recorded: Sequence[Mapping[str, Any]] | None) -> None:
        self._commands = []
        self._now_ms = time_ms
        self.loop.set_time(time_ms / 1000.0)
        self._replaying = recorded is not None
        self._recorded = recorded or ()
        self._task_error = None

    def _deliver_and_run(self, inputs: Sequence[Mapping[str, Any]]) -> None:
        for event in inputs:
            self._deliver(event)
            if self._task_error is not None:
                break
        if self._task_error is None:
            self._run_until_blocked()

    def local_activities_waiting(self) -> list[LocalActivityRequest]:
        """The local activities the worker is to run now (live), in the order code asked."""
        if self.finished or self._task_error is not None or self._local_activities is None:
            return []
        return self._local_activities.runnable()

    def resolve_local_activities(self, outcomes: Sequence[LocalActivityOutcome]) -> list[Command]:
        """Live: the outcomes of the local activities run for this task (all that were
        waiting, in request order); the code goes on. Returns all the task's commands."""
        previous = self._enter()
        try:
            for outcome in outcomes:
                self.local_activities.resolve(outcome)
            self._run_until_blocked()
        finally:
            asyncio._set_running_loop(previous)
        return self._commands_or_error()

    def _commands_or_error(self) -> list[Command]:
        if self._task_error is not None:
            error = self._task_error
            if isinstance(error, WorkflowTaskError):
                raise error
            raise WorkflowTaskError(f"workflow code raised {error!r}", error)
        # The list itself, not a copy: the next activation starts a new one, and a cached run
        # waiting for its task's events then holds one list fewer for the collector to walk.
        return self._commands

    def query(self, name: str, args: Sequence[Any]) -> Any:
        """Run a query handler against the current state; it must not decide anything."""
        if name == STACK_TRACE_QUERY and name not in self.definition.queries:  # built in (stack.py)
            return stack_trace(self.loop, self._run_task)
        handler = self.definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self.definition.queries)) or "none"
            raise ApplicationError(f"unknown query {name!r} (known: {known})", type="QueryNotFound")
        if self._obj is None:
            raise ApplicationError("the workflow has not started yet", type="QueryFailed")
        before = len(self._commands)
        args = self._handler_args(handler, args, f"query {name}")
        previous = self._enter()
        try:
            result = self.inbound.handle_query(HandleQueryInput(name, types.MethodType(handler, self._obj), args))
        finally:
            asyncio._set_running_loop(previous)
        if len(self._commands) != before:
            del self._commands[before:]
            raise ApplicationError(f"query {name!r} tried to change the workflow", type="QueryFailed")
        return result

    def dispose(self) -> None:
        """Forget this instance (evicted from the cache); its pending code never runs again."""
        self.loop.close()
        # A run evicted while it waits is a ring: the future it awaits calls its task back,
        # the task holds the coroutines whose frames hold the future (and this instance).
        # Undone here, the run is freed by reference counting when the cache lets go of
        # it, instead of waiting for the collector's next pass over the oldest generation.
        task, self._run_task = self._run_task, None
        _unhook_waits(task)
        self._activities.clear()
        self._conditions = None
        # Signal and update handlers waiting are rings too, undone the same way.
        handlers, self._handler_tasks = self._handler_tasks, None
        for handler in handlers or ():
            _unhook_waits(handler)

    def _enter(self) -> asyncio.AbstractEventLoop | None:
        """Make this instance's loop the running one; returns the loop to put back after.

        Workflow code reaches the loop through asyncio.get_running_loop(), so the real loop
        of the worker is swapped out while this instance runs (synchronously). A call and a
        ``finally`` rather than a context manager: it runs on every activation.
        """
        previous = asyncio._get_running_loop()
        asyncio._set_running_loop(self.loop)
        return previous

    def _run_until_blocked(self) -> None:
        while self._task_error is None:
            self.loop.run_ready()
            if self._task_error is not None or self.loop.paused or not self._resolve_one_condition():
                break

    def _resolve_one_condition(self) -> bool:
        # One at a time: the waiter's continuation may make the other conditions false again.
        if not self._conditions:
            return False
        for entry in list(self._conditions):
            check, future = entry
            if future.done():
                self._conditions.remove(entry)
                continue
            try:
                satisfied = check()
            except Exception as exc:  # noqa: BLE001 - surfaced to the awaiting workflow code
                self._conditions.remove(entry)
                future.set_exception(exc)
                return True
            if satisfied:
                self._conditions.remove(entry)
                future.set_result(None)
                return True
        return False

    # -- input events ----------------------------------------------------------------

    def _deliver(self, event: Mapping[str, Any]) -> None:
        kind = event["event_type"]
        attrs: Mapping[str, Any] = event.get("attributes") or {}
        if kind == _STARTED:
            self._start(event, attrs)
        elif kind == _SIGNALED:
            self._signal(str(attrs["signal_name"]), decode_args(attrs.get("input")))
        elif kind in _ACTIVITY_OUTCOMES:
            self._resolve_activity(kind, attrs)
        elif kind == _CANCEL_REQUESTED:
            self._request_cancel()
        elif kind == UPDATE_REQUESTED:
            self._update(attrs, validate=True)
        elif kind == _UPDATE_ACCEPTED:
            self._update(attrs, validate=False)  # a replay: the validator passed when it ran
        elif kind in CHILD_INPUT_EVENT_TYPES:
            self.children.deliver(kind, attrs)
        elif kind == _TIMER_FIRED:
            self._timer_fired(str(attrs["timer_id"]))

    def _timer_fired(self, timer_id: str) -> None:
        if self._local_activities is not None and self._local_activities.timer_fired(timer_id):
            return  # a local activity's backoff is over: it runs again in this task
        if not self.loop.fire_timer(timer_id):
            _log.debug("timer %s fired but nothing waits for it", timer_id)

    def _start(self, event: Mapping[str, Any], attrs: Mapping[str, Any]) -> None:
        timeout_ms = int(attrs.get("execution_timeout_ms") or 0)
        self._info = WorkflowInfo(
            namespace=self.namespace,
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            workflow_type=str(attrs.get("workflow_type", self.definition.name)),
            task_queue=str(attrs.get("task_queue", "")),
            attempt=int(attrs.get("attempt") or 1),
            start_time=datetime.fromtimestamp(int(event["event_time"]) / 1000.0, tz=UTC),
            execution_timeout=timedelta(milliseconds=timeout_ms) if timeout_ms else None,
            workflow_task_timeout=timedelta(milliseconds=int(attrs.get("workflow_task_timeout_ms") or 10000)),
            continued_run_id=attrs.get("continued_execution_run_id"),
            run_timeout=timedelta(milliseconds=int(attrs["run_timeout_ms"])) if attrs.get("run_timeout_ms") else None,
            memo=_memo(self.converter.decode_value(attrs.get("memo"), what="memo")),
            parent=_parent(attrs),
            retry_policy=_retry_policy(attrs.get("retry_policy")),
            search_attributes=_memo(json.loads(attrs["search_attributes"]) if attrs.get("search_attributes") else None),
        )
        try:
            run_fn = self.definition.run_fn
            raw = decode_args(attrs.get("input"))
            args = self._handler_args(run_fn, raw, f"{self.definition.cls.__qualname__}.{run_fn.__name__}")
            self._obj = self.definition.cls()
        except Exception as exc:  # noqa: BLE001 - any failure here fails the workflow task
            self._task_error = exc
            return
        execute = ExecuteWorkflowInput(self.definition.name, types.MethodType(self.definition.run_fn, self._obj), args)
        try:
            run = self.inbound.execute_workflow(execute)
        except Exception as exc:  # noqa: BLE001 - a bad call of run(): raised where the run awaits, as ever
            run = _raised(exc)
        # One context for the task and its done callback (each would copy its own: one
        # object more per cached run for the collector to walk).
        context = contextvars.copy_context()
        task = self.loop.create_task(run, name="workflow.run", context=context)
        # A function, not a bound method made for it (one object more per cached run).
        task.add_done_callback(_run_done, context=context)
        # This instance holds its run's task: asyncio's registry of all tasks (a weak set,
        # a weak reference per task) need not, and the stack trace query reads it from here.
        _unregister_task(task)
        self._run_task = task
        buffered, self._buffered_signals = self._buffered_signals or [], None
        for name, signal_args in buffered:
            self._signal(name, signal_args)

    def _handler_args(self, handler: Callable[..., Any], raw: Sequence[Any], what: str) -> list[Any]:
        """Plain JSON arguments converted to the handler's type hints (PayloadError names
        the argument and ``what`` it is for)."""
        hints = signature_of(handler, method=True).param_hints(len(raw))
        try:
            return self.converter.decode_args(list(raw), hints, what=what)
        except PayloadError as err:
            # Fails the workflow task with the converter's message as it is: a fixed
            # deploy (or converter) then takes the same history further.
            raise WorkflowTaskError(str(err), err) from err

    def _signal(self, name: str, args: list[Any]) -> None:
        handler = self.definition.signals.get(name)
        if handler is None or self._obj is None:
            # Kept until a handler exists; the workflow may read them later.
            if self._buffered_signals is None:
                self._buffered_signals = []
            self._buffered_signals.append((name, args))
            return
        try:
            converted = self._handler_args(handler, args, f"signal {name}")
            result = self.inbound.handle_signal(HandleSignalInput(name, types.MethodType(handler, self._obj),
                                                                  converted))
        except BaseException as exc:  # noqa: BLE001 - routed like the run method's errors
            self._on_code_error(exc)
            return
        if asyncio.iscoroutine(result):
            task = self.loop.create_task(result, name=f"signal.{name}")
            self._handler_running(task, "signal", name, handler)
            task.add_done_callback(self._on_handler_done)

    def _update(self, attrs: Mapping[str, Any], *, validate: bool) -> None:
        """An update delivered (live: validate, then accept or reject) or accepted (replay):
        the accept command comes first, then the handler runs; its outcome completes it."""
        update_id, name = str(attrs["update_id"]), str(attrs.get("update_name") or attrs.get("name") or "")
        handler = self.definition.updates.get(name)
        try:
            args = self._validated(name, attrs, validate)
        except Exception as exc:  # noqa: BLE001 - any failure of the validation rejects the update
            if not validate:
                self._task_error = WorkflowTaskError(f"update {update_id!r} ({name}) cannot replay: {exc!r}", exc)
                return
            self._add(Command(CommandType.REJECT_WORKFLOW_UPDATE, {"update_id": update_id,
                                                       "failure": failure_from_exception(exc)}))
            return
        assert handler is not None
        self._add(Command(CommandType.ACCEPT_WORKFLOW_UPDATE, {"update_id": update_id}))
        self._running_updates += 1
        try:
            result = self.inbound.handle_update(HandleUpdateInput(name, update_id,
                                                                  types.MethodType(handler, self._obj), args))
        except BaseException as exc:  # noqa: BLE001 - routed like an async handler's error
            self._update_done(update_id, name, None, exc)
            return
        if not asyncio.iscoroutine(result):
            self._update_done(update_id, name, result, None)
            return
        task = self.loop.create_task(result, name=f"update.{name}")
        self._handler_running(task, "update", name, handler)

        def done(t: asyncio.Task[Any]) -> None:
            if self._handler_tasks is not None:
                self._handler_tasks.pop(t, None)
            if self.loop.is_closed():
                return
            if t.cancelled():
                self._update_done(update_id, name, None, CanceledError("update handler canceled"))
            else:
                self._update_done(update_id, name, t.result() if t.exception() is None else None, t.exception())

        task.add_done_callback(done)

    def _validated(self, name: str, attrs: Mapping[str, Any], validate: bool) -> list[Any]:
        """The update's arguments, once its validator (when ``validate``) passed; raises to reject."""
        if name == UPDATE_RESULT_NAME:  # a client waiting for an update this run does not know
            raise ApplicationError(f"this run has no update {attrs.get('update_id')!r}", type="UpdateNotFound",
                                   non_retryable=True)
        if name not in self.definition.updates:
            known = ", ".join(sorted(self.definition.updates)) or "none"
            raise ApplicationError(f"unknown update {name!r} (known: {known})", type="UpdateNotFound",
                                   non_retryable=True)
        if self._obj is None:
            raise ApplicationError("the workflow has not started", type="UpdateFailed", non_retryable=True)
        # Typed by the handler's hints (the validator takes the same arguments); an argument
        # that does not convert rejects the update live, naming the argument.
        raw = decode_args(attrs.get("input"))
        handler = self.definition.updates[name]
        args = self.converter.decode_args(raw, signature_of(handler, method=True).param_hints(len(raw)),
                                          what=f"update {name}")
        validator = self.definition.validator_of(name)
        if validate and validator is not None:
            before = len(self._commands)
            self.inbound.handle_update_validator(HandleUpdateInput(
                name, str(attrs.get("update_id", "")), types.MethodType(validator, self._obj), args))
            if len(self._commands) != before:
                del self._commands[before:]
                raise ApplicationError(f"the validator of update {name!r} tried to change the workflow",
                                       type="UpdateValidatorFailed", non_retryable=True)
        return args

    def _update_done(self, update_id: str, name: str, result: Any, exc: BaseException | None) -> None:
        """An accepted update's handler is over: an ApplicationError (any FailureError) is
        the update's failure; another exception fails the workflow task, as in a signal."""
        self._running_updates -= 1
        if exc is not None and not isinstance(exc, FailureError):
            self._on_code_error(exc)
            return
        attributes: dict[str, Any] = {"update_id": update_id, "result": None, "failure": None}
        if exc is not None:
            attributes["failure"] = failure_from_exception(exc)
        else:
            try:
                attributes["result"] = self.converter.encode_value(result, what=f"result of update {name}")
            except (TypeError, ValueError) as err:
                self._task_error = WorkflowTaskError(str(err), err)
                return
        self._add(Command(CommandType.COMPLETE_WORKFLOW_UPDATE, attributes))

    def all_handlers_finished(self) -> bool:
        """No accepted update handler and no async signal handler is still running."""
        return self._running_updates == 0 and not self._handler_tasks

    def _handler_running(self, task: asyncio.Task[Any], kind: str, name: str, handler: Callable[..., Any]) -> None:
        if self._handler_tasks is None:
            self._handler_tasks = {}
        self._handler_tasks[task] = (kind, name, unfinished_policy_of(handler))

    def _warn_unfinished_handlers(self) -> None:
        """Temporal's warning when a run closes while handlers run: their work is cut off
        and an update's caller gets WorkflowAlreadyClosedError instead of its result."""
        if self._replaying or not self._handler_tasks:
            return
        counts: dict[str, int] = {}
        for kind, name, policy in self._handler_tasks.values():
            if policy is HandlerUnfinishedPolicy.WARN_AND_ABANDON:
                counts[f"{kind} {name!r}"] = counts.get(f"{kind} {name!r}", 0) + 1
        if counts:
            info = self.started_info()
            running = ", ".join(f"{what} ({n})" for what, n in sorted(counts.items()))
            _log.warning("workflow %s (id %s, run %s) closes while handlers are still running: %s; their work is "
                         "abandoned and an update's caller gets WorkflowAlreadyClosedError. Wait for them with "
                         "`await workflow.wait_condition(workflow.all_handlers_finished)` before closing, or mark "
                         "the handler unfinished_policy=HandlerUnfinishedPolicy.ABANDON",
                         info.workflow_type, info.workflow_id, info.run_id, running)

    def _request_cancel(self) -> None:
        """The run's cancellation: delivered once, as CancelledError into the run method."""
        if self.cancel_requested:
            return
        self.cancel_requested = True
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel("the workflow's cancellation was requested")

    def _resolve_activity(self, kind: str, attrs: Mapping[str, Any]) -> None:
        if kind in _RETRIED_OUTCOMES and attrs.get("retry_backoff_ms") is not None:
            return  # an intermediate attempt: another one follows, the code never sees it
        scheduled = int(attrs["scheduled_event_id"])
        pending = self._activities.pop(scheduled, None)
        if pending is None:
            return
        if pending.future.done():
            # The workflow stopped waiting (its awaiting task was cancelled); it may wait for
            # the activity to be over (WAIT_CANCELLATION_COMPLETED).
            if pending.settled is not None and not pending.settled.done():
                pending.settled.set_result(None)
            return
        if kind == EventType.ACTIVITY_TASK_COMPLETED:
            try:
                value = self.converter.decode_value(attrs.get("result"), pending.result_type,
                                                    what=f"result of activity {pending.activity_type}")
            except (TypeError, ValueError) as err:  # raised where the workflow awaits it
                pending.future.set_exception(err)
                return
            pending.future.set_result(value)
            return
        cause: FailureError
        if kind == EventType.ACTIVITY_TASK_CANCELED:
            cause = CanceledError("activity canceled", *decode_args(attrs.get("details")))
            what = "was canceled"
        elif kind == EventType.ACTIVITY_TASK_FAILED:
            cause = exception_from_failure(attrs.get("failure") or {})
            what = f"failed: {cause.message}"
        else:
            raw = attrs.get("last_heartbeat_details")
            cause = ActivityTimeoutError(str(attrs.get("timeout_type", "")), last_heartbeat_details=decode_args(raw))
            if attrs.get("last_failure"):
                # The attempt before the timeout failed: no event of its own says so.
                cause.__cause__ = exception_from_failure(attrs["last_failure"])
            what = f"timed out ({cause.timeout_type})"
        pending.future.set_exception(
            ActivityError(
                f"activity {pending.activity_type} (id {pending.activity_id}) {what}",
                activity_id=pending.activity_id,
                activity_type=pending.activity_type,
                scheduled_event_id=scheduled,
                cause=cause,
                retry_state=pending.retry_state(cause),
            )
        )

    # -- outcomes of workflow code -------------------------------------------------------

    def _on_run_done(self, task: asyncio.Task[Any]) -> None:
        if self.finished or self.loop.is_closed():
            return
        if task.cancelled():
            if self.cancel_requested:
                # The cancellation escaped run(): the run closes as Canceled.
                self._finish(CommandType.CANCEL_WORKFLOW_EXECUTION, {"details": None})
            else:
                self._task_error = WorkflowTaskError("the workflow's run method was cancelled")
            return
        exc = task.exception()
        if exc is None:
            try:
                result = self.converter.encode_value(task.result(), what=f"result of workflow {self.definition.name}")
            except (TypeError, ValueError) as err:
                self._task_error = WorkflowTaskError(str(err), err)
                return
            self._finish(CommandType.COMPLETE_WORKFLOW_EXECUTION, {"result": result})
        elif isinstance(exc, ContinueAsNewError):
            from kadence._visibility import search_attributes_json

            info = self.info()
            self._finish(
                CommandType.CONTINUE_AS_NEW_WORKFLOW_EXECUTION,
                {
                    "workflow_type": exc.workflow_type or info.workflow_type,
                    "task_queue": exc.task_queue or info.task_queue,
                    "input": self.converter.encode_args(exc.run_args, what="continue-as-new"),
                    # Only when replaced: without it the new run keeps this run's memo.
                    **({"memo": self.converter.encode_value(dict(exc.memo), what="memo")}
                       if exc.memo is not None else {}),
                    # Plain JSON (not through the data converter: the server reads them).
                    # None keeps this run's, as Temporal's default; {} starts the new run without.
                    **({"search_attributes": encode_value(search_attributes_json(carried))}
                       if (carried := info.search_attributes if exc.search_attributes is None
                           else exc.search_attributes) else {}),
                },
            )
        else:
            self._on_code_error(exc)

    def _on_handler_done(self, task: asyncio.Task[Any]) -> None:
        if self._handler_tasks is not None:
            self._handler_tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None and not self.loop.is_closed():
            self._on_code_error(task.exception())  # type: ignore[arg-type]

    def _on_code_error(self, exc: BaseException) -> None:
        if self.finished:
            return
        if isinstance(exc, FailureError):
            self._finish(CommandType.FAIL_WORKFLOW_EXECUTION, {"failure": failure_from_exception(exc)})
        elif self._task_error is None:
            self._task_error = exc

    def on_callback_error(self, exc: BaseException, message: str) -> None:
        if self._task_error is None:
            self._task_error = WorkflowTaskError(f"{message}: {exc!r}", exc)

    def _finish(self, command_type: str, attributes: dict[str, Any]) -> None:
        if command_type != CommandType.CANCEL_WORKFLOW_EXECUTION and not self.finished:
            self._warn_unfinished_handlers()
        self._add(Command(command_type, attributes))
        self.finished = True

    def _add(self, command: Command) -> None:
        # After the workflow closed nothing else it decides can take effect.
        if not self.finished:
            self._commands.append(command)

    # -- services for workflow code (kadence.workflow) -------------------------------

    def started_info(self) -> WorkflowInfo:
        """The run's info as its start gave it, for the SDK's own reads of those fields: not
        a copy, and its history fields are not this task's (see :meth:`info`)."""
        if self._info is None:
            raise RuntimeError("workflow info is not available before the workflow started")
        return self._info

    def info(self) -> WorkflowInfo:
        if self._info is None:
            raise RuntimeError("workflow info is not available before the workflow started")
        seen = (self.history_length, self.history_size, self.continue_as_new_suggested, self.workflow_task_attempt)
        info = self._info
        if (info.history_length, info.history_size, info.continue_as_new_suggested,
                info.workflow_task_attempt) != seen:
            self._info = info = dataclasses.replace(info, history_length=seen[0], history_size=seen[1],
                                                    continue_as_new_suggested=seen[2],
                                                    workflow_task_attempt=seen[3])
        # Copies of the memo and the attributes: workflow code changing them changes nothing.
        return dataclasses.replace(info, memo=dict(info.memo), search_attributes=dict(info.search_attributes))

    def side_effect(self, fn: Callable[[], Any], result_type: Any) -> Any:
        """``fn()`` run once, its value recorded in a marker; a replay returns the recorded value."""
        self._side_effect_seq += 1
        marker = f"{SIDE_EFFECT_MARKER_PREFIX}{self._side_effect_seq}"
        what = f"side effect {self._side_effect_seq}"
        if self._replaying:
            found = [e for e in self._recorded if e["event_type"] == EventType.MARKER_RECORDED
                     and (e.get("attributes") or {}).get("marker_name") == marker]
            if not found:
                raise NonDeterminismError(f"non-determinism: the workflow code asks for {what}, but history "
                                          "records no value for it in this workflow task")
            details = (found[0].get("attributes") or {}).get("details")
        else:
            details = self.converter.encode_value(fn(), what=f"value of {what}")
        self._add(Command(CommandType.RECORD_MARKER, {"marker_name": marker, "details": details}))
        # Through the converter both times, so the live run sees what a replay will.
        return self.converter.decode_value(details, result_type, what=f"value of {what}")

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now_ms / 1000.0, tz=UTC)

    def is_replaying(self) -> bool:
        return self._replaying

    def start_timer(self, delay_seconds: float) -> str:
        self._timer_seq += 1
        timer_id = str(self._timer_seq)
        self._add(
            Command(
                CommandType.START_TIMER,
                # requested_time: the call's wall-clock time, which history counts the timer
                # from (clamped); not part of the code's determinism, never compared on replay.
                {"timer_id": timer_id, "start_to_fire_timeout_ms": timer_duration_ms(delay_seconds),
                 "requested_time": timer_requested_time()},
            )
        )
        return timer_id

    def cancel_timer(self, timer_id: str) -> None:
        for i, command in enumerate(self._commands):
            if command.command_type == CommandType.START_TIMER and command.attributes["timer_id"] == timer_id:
                # Started and cancelled in the same task: the server never needs to know.
                del self._commands[i]
                return
        self._add(Command(CommandType.CANCEL_TIMER, {"timer_id": timer_id}))

    async def execute_activity(self, activity_type: str, args: Sequence[Any], attributes: Mapping[str, Any],
                               cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
                               result_type: Any = None) -> Any:
        self._activity_seq += 1
        activity_id = str(attributes.get("activity_id") or self._activity_seq)
        pending = _PendingActivity(self.loop, activity_id, activity_type, attributes.get("retry_policy"),
                                   result_type=result_type, waiting=self._activities)
        future = pending.future

        attrs = {
            **attributes,
            "activity_id": activity_id,
            "activity_type": activity_type,
            "task_queue": attributes.get("task_queue") or self.started_info().task_queue,
            "input": self.converter.encode_args(args, what=f"activity {activity_type}"),
        }
        command = Command(CommandType.SCHEDULE_ACTIVITY_TASK, attrs, pending)
        self._add(command)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                raise  # the activity was over already: nothing to cancel
            if cancellation_type is not ActivityCancellationType.ABANDON:
                self._cancel_activity(command, pending, cancellation_type)
            if pending.settled is not None:
                await pending.settled
            raise

    def _cancel_activity(self, command: Command, pending: _PendingActivity,
                         cancellation_type: ActivityCancellationType) -> None:
        """Ask history to cancel an activity whose awaiting code was cancelled."""
        for i, decided in enumerate(self._commands):
            if decided is command:
                # Scheduled and cancelled in the same task: the server never needs to know.
                del self._commands[i]
                return
        if self.finished:
            return
        if not pending.scheduled_event_id:
            # Only when a task that ran ahead cancels an activity of a task history has not
            # numbered yet: fail this task; its replay from history knows the number.
            if self._task_error is None:
                self._task_error = WorkflowTaskError(
                    f"activity {pending.activity_id} cannot be cancelled before history numbered it")
            return
        self._add(Command(CommandType.REQUEST_CANCEL_ACTIVITY_TASK, {"scheduled_event_id": pending.scheduled_event_id}))
        if cancellation_type is ActivityCancellationType.WAIT_CANCELLATION_COMPLETED:
            pending.settled = self.loop.create_future()
            self._activities[pending.scheduled_event_id] = pending

    async def wait_condition(self, check: Callable[[], bool], timeout: float | None) -> None:
        future: asyncio.Future[None] = self.loop.create_future()
        if self._conditions is None:
            self._conditions = []
        self._conditions.append((check, future))
        if timeout is None:
            await future
        else:
            await asyncio.wait_for(future, timeout)

    def upsert_search_attributes(self, values: Mapping[str, Any]) -> None:
        # A marker, not a command of its own: replay matches it by name like any marker,
        # and the frontend and the visibility projection know the name.
        from kadence._visibility import SEARCH_ATTRIBUTES_MARKER, search_attributes_json

        values = search_attributes_json(values)
        details = encode_value(values)  # TypeError for a value JSON cannot hold
        if self._info is not None:
            self._info = dataclasses.replace(self._info, search_attributes={**self._info.search_attributes, **values})
        self._add(Command(CommandType.RECORD_MARKER, {"marker_name": SEARCH_ATTRIBUTES_MARKER, "details": details}))

    def patched(self, patch_id: str) -> bool:
        if patch_id in self._patches:
            return self._patches[patch_id]
        marker = PATCH_MARKER_PREFIX + patch_id
        if self._replaying:
            # Replaying: the new code path only if the original run recorded the marker here.
            result = any(
                e["event_type"] == EventType.MARKER_RECORDED
                and (e.get("attributes") or {}).get("marker_name") == marker
                for e in self._recorded
            )
        else:
            result = True
        if result:
            self._add(Command(CommandType.RECORD_MARKER, {"marker_name": marker,
                                                          "details": encode_value({"patch_id": patch_id})}))
        self._patches[patch_id] = result
        return result

    def deprecate_patch(self, patch_id: str) -> None:
        """The new code path of ``patch_id`` is the only one left: a marker marked deprecated
        is recorded live (code still calling ``patched`` replays it as patched), and replayed
        only where history has one; code without the call skips such markers (runner._match)."""
        if patch_id in self._patches:
            return
        self._patches[patch_id] = True
        marker = PATCH_MARKER_PREFIX + patch_id
        if self._replaying and not any(
                e["event_type"] == EventType.MARKER_RECORDED
                and (e.get("attributes") or {}).get("marker_name") == marker for e in self._recorded):
            return
        self._add(Command(CommandType.RECORD_MARKER, {
            "marker_name": marker, "details": encode_value({"patch_id": patch_id, "deprecated": True})}))
