"""Local activities: activities the worker runs inside the workflow task that asks for them.

Workflow code calls ``workflow.execute_local_activity``. The request waits in the instance
(:class:`LocalActivities`) until the activation blocks; the worker's workflow task processor
then runs every waiting request (:class:`LocalActivityExecutor`, retrying per the policy
within the task) and hands the outcomes back in request order. Each outcome becomes a
``RecordMarker`` command (marker ``local_activity:<seq>``) and resolves the awaiting code,
which goes on, maybe asking for more, until nothing waits; the task's commands then go to
history as any task's do. No matching round trip, no ActivityTask events.

Replay never runs the function: the marker in the task's recorded events is the outcome.
Code that asks for a local activity where the task recorded no marker for it, or a marker of
another activity type, is non-deterministic.

Retries: an attempt runs for at most its start-to-close timeout (and what is left of
schedule-to-close) and never past the task's budget (80% of the workflow task timeout,
counted from when the worker took the task), so the task is answered before history times
it out. A retry whose backoff fits in what is left of the budget is waited for in the task.
A longer one is not: the marker records the failed attempt with its backoff, a durable timer
(``local_activity:<seq>:<attempt>``) waits it out, and the next attempt runs in the workflow
task its firing brings (Temporal's "local retry threshold", here the budget).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from kadence._activity import ActivityContext, ActivityDefinition, ActivityInfo, set_context
from kadence._converter import decode_value, encode_value
from kadence._failure import exception_from_failure, failure_from_exception
from kadence._retry_rule import retry_backoff
from kadence._worker.interception import ActivityCalls
from kadence._workflow.owned import Owned
from kadence.common import RetryState
from kadence.converter import DataConverter, signature_of
from kadence.exceptions import ActivityError, ActivityTimeoutError, ApplicationError, NonDeterminismError
from kadence.interceptor import ExecuteActivityInput, Interceptor, chain_activity
from kadence_protocol.enums import TimeoutType

if TYPE_CHECKING:
    from kadence._workflow.instance import WorkflowInstance

__all__ = [
    "MARKER_PREFIX",
    "LocalActivities",
    "LocalActivityExecutor",
    "LocalActivityOutcome",
    "LocalActivityRequest",
    "task_budget_seconds",
]

_log = logging.getLogger(__name__)

#: Marker names (one per outcome) and backoff timer ids start with this.
MARKER_PREFIX = "local_activity:"
#: The share of the workflow task timeout local activities may use in one task.
BUDGET_SHARE = 0.8
#: Less than this left of the budget: an attempt is not started in this task.
_MIN_ATTEMPT_SECONDS = 0.05


def task_budget_seconds(workflow_task_timeout: timedelta) -> float:
    """How long one workflow task may spend running local activities."""
    return max(0.05, workflow_task_timeout.total_seconds() * BUDGET_SHARE)


@dataclass(frozen=True)
class LocalActivityRequest:
    """A local activity waiting to run its next attempts (what the executor needs)."""

    seq: int
    activity_id: str
    activity_type: str
    #: The ``@activity.defn`` function given to execute_local_activity; None when called by
    #: name (the worker's registered activities are looked up then).
    fn: Callable[..., Any] | None
    input: str | None  # the arguments as the converter's JSON text
    attempt: int  # the attempt to run first
    scheduled_time_ms: int  # the workflow time of the call: schedule-to-close counts from it
    start_to_close_ms: int
    schedule_to_close_ms: int
    retry_policy: Mapping[str, Any] | None
    workflow_id: str = ""
    run_id: str = ""
    workflow_type: str = ""
    namespace: str = ""
    task_queue: str = ""


@dataclass(frozen=True)
class LocalActivityOutcome:
    """How a local activity's attempts in one workflow task ended: a result, a failure (the
    last), or a failure with the backoff before the next attempt (in a later task)."""

    seq: int
    activity_type: str
    attempt: int  # the attempt that ended it
    result: str | None = None  # the converter's JSON text
    failure: Mapping[str, Any] | None = None
    backoff_ms: int | None = None
    retry_state: RetryState | None = None

    @property
    def marker_name(self) -> str:
        return f"{MARKER_PREFIX}{self.seq}"

    def to_details(self) -> str:
        return encode_value({
            "activity_type": self.activity_type, "attempt": self.attempt, "result": self.result,
            "failure": dict(self.failure) if self.failure is not None else None, "backoff_ms": self.backoff_ms,
            "retry_state": None if self.retry_state is None else self.retry_state.value,
        })

    @classmethod
    def from_details(cls, seq: int, details: str | None) -> LocalActivityOutcome:
        value = decode_value(details)
        if not isinstance(value, dict):
            raise NonDeterminismError(f"the marker of local activity {seq} holds no outcome: {details!r}")
        state = value.get("retry_state")
        return cls(seq, str(value.get("activity_type", "")), int(value.get("attempt") or 1), value.get("result"),
                   value.get("failure"), value.get("backoff_ms"), RetryState(state) if state else None)


@dataclass
class _Pending:
    request: LocalActivityRequest
    future: asyncio.Future[Any]
    result_type: Any
    timer_id: str | None = None  # the durable timer of a backoff being waited out


class LocalActivities(Owned):
    """One workflow instance's local activities, by sequence number (the order code asked)."""

    def __init__(self, instance: WorkflowInstance) -> None:
        super().__init__(instance)
        self._seq = 0
        self._pending: dict[int, _Pending] = {}

    async def execute(self, activity_type: str, fn: Callable[..., Any] | None, args: Sequence[Any], *,
                      activity_id: str | None, start_to_close_ms: int, schedule_to_close_ms: int,
                      retry_policy: Mapping[str, Any] | None, result_type: Any) -> Any:
        instance = self._instance
        self._seq += 1
        seq = self._seq
        info = instance.started_info()  # start fields only
        request = LocalActivityRequest(
            seq=seq, activity_id=activity_id or f"local-{seq}", activity_type=activity_type, fn=fn,
            input=instance.converter.encode_args(args, what=f"local activity {activity_type}"), attempt=1,
            scheduled_time_ms=int(instance.now().timestamp() * 1000), start_to_close_ms=start_to_close_ms,
            schedule_to_close_ms=schedule_to_close_ms, retry_policy=retry_policy, workflow_id=info.workflow_id,
            run_id=info.run_id, workflow_type=info.workflow_type, namespace=info.namespace,
            task_queue=info.task_queue)
        pending = _Pending(request, instance.loop.create_future(), result_type)
        self._pending[seq] = pending
        try:
            return await pending.future
        except asyncio.CancelledError:
            # The awaiting code was cancelled: an attempt not run yet never runs, a backoff
            # timer is cancelled. (Attempts run while the code is suspended, so none is
            # running now.)
            if self._pending.pop(seq, None) is not None and pending.timer_id is not None:
                instance.cancel_timer(pending.timer_id)
            raise

    def runnable(self) -> list[LocalActivityRequest]:
        """The requests to run now, in the order code made them (not those waiting out a backoff)."""
        return [p.request for _, p in sorted(self._pending.items()) if p.timer_id is None]

    def resolve(self, outcome: LocalActivityOutcome) -> None:
        """Record ``outcome`` (a marker, then a backoff timer if one follows) and hand it to
        the awaiting code."""
        from kadence._workflow.instance import Command, timer_requested_time

        instance = self._instance
        pending = self._pending.get(outcome.seq)
        if pending is None:
            return
        instance._add(Command("RecordMarker", {"marker_name": outcome.marker_name, "details": outcome.to_details()}))
        if outcome.backoff_ms is not None:
            timer_id = f"{MARKER_PREFIX}{outcome.seq}:{outcome.attempt}"
            # The backoff counts from now (the failed attempt), as a sleep counts from its call.
            instance._add(Command("StartTimer", {"timer_id": timer_id,
                                                 "start_to_fire_timeout_ms": max(1, outcome.backoff_ms),
                                                 "requested_time": timer_requested_time()}))
            pending.timer_id = timer_id
            pending.request = replace(pending.request, attempt=outcome.attempt + 1)
            return
        del self._pending[outcome.seq]
        if pending.future.done():
            return
        request = pending.request
        if outcome.failure is None:
            try:
                value = instance.converter.decode_value(outcome.result, pending.result_type,
                                                        what=f"result of local activity {request.activity_type}")
            except (TypeError, ValueError) as err:  # raised where the workflow awaits it
                pending.future.set_exception(err)
                return
            pending.future.set_result(value)
            return
        cause = exception_from_failure(outcome.failure)
        pending.future.set_exception(ActivityError(
            f"local activity {request.activity_type} (id {request.activity_id}) failed: {cause.message}",
            activity_id=request.activity_id, activity_type=request.activity_type, scheduled_event_id=0,
            cause=cause, retry_state=outcome.retry_state))

    def resolve_from_history(self, recorded: Sequence[Mapping[str, Any]]) -> bool:
        """Replay: resolve every runnable request from its marker in the task's recorded
        events; False when none was runnable. A request without its marker, or with a
        marker of another activity type, raises NonDeterminismError."""
        requests = self.runnable()
        for request in requests:
            name = f"{MARKER_PREFIX}{request.seq}"
            found = [e for e in recorded if e["event_type"] == "MarkerRecorded"
                     and (e.get("attributes") or {}).get("marker_name") == name]
            if not found:
                raise NonDeterminismError(
                    f"non-determinism: the workflow code runs local activity {request.activity_type} "
                    f"(number {request.seq}), but history records no outcome for it in this workflow task")
            outcome = LocalActivityOutcome.from_details(request.seq, (found[0].get("attributes") or {}).get("details"))
            if outcome.activity_type != request.activity_type:
                raise NonDeterminismError(
                    f"non-determinism: the workflow code runs local activity {request.activity_type} "
                    f"(number {request.seq}), but history recorded local activity {outcome.activity_type} there")
            self.resolve(outcome)
        return bool(requests)

    def timer_fired(self, timer_id: str) -> bool:
        """A backoff timer fired: its local activity is runnable again. False if not ours."""
        for pending in self._pending.values():
            if pending.timer_id == timer_id:
                pending.timer_id = None
                return True
        return False


class LocalActivityExecutor:
    """Runs local activity attempts in the worker, with retries, within a task's budget."""

    def __init__(self, activities: Mapping[str, ActivityDefinition], converter: DataConverter,
                 executor: concurrent.futures.Executor | None = None, *,
                 interceptors: Sequence[Interceptor] = ()) -> None:
        self._activities = activities
        self._converter = converter
        self._executor = executor
        self._inbound = chain_activity(interceptors, ActivityCalls(self._call))

    async def run(self, request: LocalActivityRequest, deadline: float) -> LocalActivityOutcome:
        """The request's attempts from ``request.attempt`` on until one completes, the
        policy gives up, or the next backoff does not fit before ``deadline`` (a
        ``time.monotonic()`` value)."""
        definition = self._definition(request)
        attempt = request.attempt
        while True:
            if deadline - time.monotonic() < _MIN_ATTEMPT_SECONDS:
                # The task's budget is spent (earlier rounds used it): the attempt runs in
                # the next task, after the shortest timer, without counting as one.
                return LocalActivityOutcome(request.seq, request.activity_type, attempt - 1, backoff_ms=1)
            outcome = await self._attempt(definition, request, attempt, deadline)
            if isinstance(outcome, LocalActivityOutcome):
                return outcome
            backoff = None if outcome.final else retry_backoff(
                request.retry_policy, attempt, int(time.time() * 1000), request.scheduled_time_ms,
                request.schedule_to_close_ms, outcome.error_type, outcome.non_retryable)
            if backoff is None:
                return LocalActivityOutcome(request.seq, request.activity_type, attempt, failure=outcome.failure,
                                            retry_state=_retry_state(request, attempt, outcome))
            if time.monotonic() + backoff / 1000 >= deadline:
                return LocalActivityOutcome(request.seq, request.activity_type, attempt, failure=outcome.failure,
                                            backoff_ms=backoff)
            await asyncio.sleep(backoff / 1000)
            attempt += 1

    def _definition(self, request: LocalActivityRequest) -> ActivityDefinition | None:
        if request.fn is not None:
            given = ActivityDefinition.of(request.fn)
            registered = self._activities.get(request.activity_type)
            if registered is not None and getattr(registered.fn, "__func__", None) is given.fn:
                # The class's method (``Inventory.reserve``) of an activity the worker was
                # given bound: run it on the worker's object, as an activity would be.
                return registered
            return given
        return self._activities.get(request.activity_type)

    async def _attempt(self, definition: ActivityDefinition | None, request: LocalActivityRequest, attempt: int,
                       deadline: float) -> LocalActivityOutcome | _Failed:
        """One attempt: its completed outcome, or how it failed."""
        if definition is None:
            known = ", ".join(sorted(self._activities)) or "none"
            return _failed(ApplicationError(
                f"local activity type {request.activity_type!r} is not registered on this worker (known: {known})",
                type="UnknownActivityType", non_retryable=True))
        what = f"local activity {request.activity_type}"
        try:
            raw = decode_value(request.input) if request.input else []
            hints = signature_of(definition.fn).param_hints(len(raw))
            args = self._converter.decode_args(list(raw), hints, what=what)
        except (TypeError, ValueError) as err:
            return _failed(ApplicationError(str(err), type="PayloadError", non_retryable=True))
        # Never past the task's budget: the task must be answered before history times it out.
        timeout = deadline - time.monotonic()
        timeout_type = TimeoutType.START_TO_CLOSE
        if request.start_to_close_ms and request.start_to_close_ms / 1000 < timeout:
            timeout = request.start_to_close_ms / 1000
        if request.schedule_to_close_ms:
            left = (request.scheduled_time_ms + request.schedule_to_close_ms) / 1000 - time.time()
            if left < timeout:
                timeout, timeout_type = left, TimeoutType.SCHEDULE_TO_CLOSE
        context = ActivityContext(self._info(request, definition, attempt, timeout), _no_heartbeat)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                result = await self._invoke(definition, args, context)
        except TimeoutError:
            # Schedule-to-close is the activity's whole time: no attempt follows.
            return _Failed(failure_from_exception(ActivityTimeoutError(timeout_type)), "TimeoutError", False,
                           final=timeout_type == TimeoutType.SCHEDULE_TO_CLOSE)
        except Exception as err:  # noqa: BLE001 - the attempt's failure, retried per the policy
            return _failed(err)
        try:
            text = self._converter.encode_value(result, what=f"result of {what}")
        except (TypeError, ValueError) as err:
            return _failed(ApplicationError(str(err), type="PayloadError", non_retryable=True))
        return LocalActivityOutcome(request.seq, request.activity_type, attempt, result=text)

    async def _invoke(self, definition: ActivityDefinition, args: list[Any], context: ActivityContext) -> Any:
        async def attempt() -> Any:
            set_context(context)  # this task's own context, the interceptors' too
            return await self._inbound.execute_activity(ExecuteActivityInput(definition.fn, args, is_local=True))

        # A task of its own: the context it sets stays its own.
        return await asyncio.get_running_loop().create_task(attempt())

    async def _call(self, input: ExecuteActivityInput) -> Any:
        if ActivityDefinition.of(input.fn).is_async:
            return await input.fn(*input.args)
        copied = contextvars.copy_context()
        call = functools.partial(copied.run, input.fn, *input.args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _info(self, request: LocalActivityRequest, definition: ActivityDefinition, attempt: int,
              timeout: float) -> ActivityInfo:
        now = datetime.now(tz=UTC)
        return ActivityInfo(
            activity_id=request.activity_id, activity_type=definition.name, attempt=attempt,
            namespace=request.namespace, workflow_id=request.workflow_id, run_id=request.run_id,
            workflow_type=request.workflow_type, task_queue=request.task_queue, task_token="",
            scheduled_event_id=0, heartbeat_details=(),
            scheduled_time=datetime.fromtimestamp(request.scheduled_time_ms / 1000, tz=UTC), started_time=now,
            schedule_to_close_timeout=timedelta(milliseconds=request.schedule_to_close_ms)
            if request.schedule_to_close_ms else None,
            start_to_close_timeout=timedelta(seconds=max(0.0, timeout)), heartbeat_timeout=None, is_local=True)


def _no_heartbeat(details: tuple[Any, ...]) -> None:
    """A local activity's heartbeat goes nowhere: it has no task token, its attempt is short."""


class _Failed(NamedTuple):
    """How an attempt failed."""

    failure: Mapping[str, Any]
    error_type: str
    non_retryable: bool
    final: bool = False  # no attempt may follow whatever the policy says (schedule-to-close passed)


def _failed(err: BaseException) -> _Failed:
    failure = failure_from_exception(err)
    return _Failed(failure, str(failure.get("type", "")), bool(failure.get("non_retryable")))


def _retry_state(request: LocalActivityRequest, attempt: int, failed: _Failed) -> RetryState:
    policy = request.retry_policy or {}
    if failed.final:
        return RetryState.TIMEOUT
    if failed.non_retryable or failed.error_type in (policy.get("non_retryable_error_types") or ()):
        return RetryState.NON_RETRYABLE_FAILURE
    if policy.get("maximum_attempts") and attempt >= policy["maximum_attempts"]:
        return RetryState.MAXIMUM_ATTEMPTS_REACHED
    return RetryState.TIMEOUT
