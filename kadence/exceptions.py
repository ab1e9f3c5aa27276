"""Every exception the Kadence SDK raises or understands, under one root.

Two families:

* failures that travel through history as a ``kadence.Failure`` record
  (:class:`FailureError` and its subclasses): raised by activity or workflow code, and
  rebuilt on the other side (an activity's failure inside the workflow, a workflow's failure
  in the client);
* errors of the SDK itself (:class:`RPCError` for the HTTP API, :class:`NonDeterminismError`
  for replay).

Whether retrying can help is carried as the class attribute ``retryable`` so callers never
have to match on message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kadence.common import RetryState

__all__ = [
    "ActivityError",
    "ActivityNotFoundError",
    "ActivityTimeoutError",
    "ApplicationError",
    "AsyncActivityCancelledError",
    "CanceledError",
    "ChildWorkflowError",
    "FailureError",
    "KadenceError",
    "NonDeterminismError",
    "PayloadError",
    "QueryFailedError",
    "RPCError",
    "ResourceExhaustedError",
    "TerminatedError",
    "WorkerRefusedError",
    "WorkflowAlreadyClosedError",
    "WorkflowAlreadyStartedError",
    "WorkflowFailureError",
    "WorkflowNotFoundError",
    "WorkflowTaskError",
    "WorkflowTimeoutError",
    "WorkflowUpdateFailedError",
]


class KadenceError(Exception):
    """Root of every Kadence error."""

    #: Whether repeating the operation that raised this may succeed.
    retryable: bool = False


class FailureError(KadenceError):
    """An error that is recorded in history as a ``kadence.Failure``.

    Raising one of these from a workflow's run method fails the workflow (not just the
    workflow task).
    """

    def __init__(self, message: str, *, type: str | None = None, stack_trace: str = "") -> None:
        super().__init__(message)
        self.message = message
        self._type = type
        self.stack_trace = stack_trace

    @property
    def type(self) -> str:
        """The failure ``type`` string; the class name unless one was given."""
        return self._type or self.__class__.__name__


class ApplicationError(FailureError):
    """Raised by user code to fail an activity or a workflow with a chosen type and details.

    ``non_retryable=True`` stops the activity's retries regardless of its retry policy.
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        stack_trace: str = "",
    ) -> None:
        super().__init__(message, type=type, stack_trace=stack_trace)
        self.details: tuple[Any, ...] = details
        self.non_retryable = non_retryable
        self.retryable = not non_retryable

    def __repr__(self) -> str:
        return (
            f"ApplicationError({self.message!r}, type={self.type!r}, "
            f"non_retryable={self.non_retryable!r}, details={self.details!r})"
        )


class ActivityTimeoutError(FailureError):
    """An activity ran out of time; ``timeout_type`` says which timeout fired
    (``StartToClose``, ``ScheduleToClose``, ``ScheduleToStart`` or ``Heartbeat``). When an
    attempt before it failed, ``__cause__`` is that failure (as an :class:`ApplicationError`)."""

    retryable = True

    def __init__(self, timeout_type: str, *, last_heartbeat_details: Sequence[Any] = ()) -> None:
        super().__init__(f"activity timed out ({timeout_type})", type="ActivityTimeoutError")
        self.timeout_type = timeout_type
        self.last_heartbeat_details: tuple[Any, ...] = tuple(last_heartbeat_details)


class CanceledError(FailureError):
    """A workflow run or an activity ended because its cancellation was requested.

    The client's :class:`WorkflowFailureError` for a run that closed as ``Canceled`` has
    one as its ``cause`` (``details``: what the workflow closed with, usually empty); in
    workflow code, an activity that history canceled is an :class:`ActivityError` whose
    ``cause`` is one.
    """

    def __init__(self, message: str = "canceled", *details: Any) -> None:
        super().__init__(message, type="CanceledError")
        self.details: tuple[Any, ...] = details


class ActivityError(FailureError):
    """Raised in workflow code when an activity finally failed or timed out.

    ``cause`` is the :class:`ApplicationError` rebuilt from the activity's last failure
    (with the activity's own error type, message, details, non-retryable flag and stack
    trace) or the :class:`ActivityTimeoutError`. A workflow that does not catch it fails
    with it, and the client's :class:`WorkflowFailureError` has this same chain as its
    ``cause``.
    """

    def __init__(
        self,
        message: str,
        *,
        activity_id: str,
        activity_type: str,
        scheduled_event_id: int,
        cause: FailureError,
        retry_state: RetryState | None = None,
        stack_trace: str = "",
    ) -> None:
        super().__init__(message, type="ActivityError", stack_trace=stack_trace)
        self.activity_id = activity_id
        self.activity_type = activity_type
        self.scheduled_event_id = scheduled_event_id
        self.retry_state = retry_state
        self.cause = cause
        self.__cause__ = cause

    def __repr__(self) -> str:
        return (
            f"ActivityError({self.message!r}, activity_type={self.activity_type!r}, "
            f"activity_id={self.activity_id!r}, retry_state={self.retry_state!r}, cause={self.cause!r})"
        )

    @property
    def timeout_type(self) -> str | None:
        """Which timeout ended the activity, or None when it failed."""
        return self.cause.timeout_type if isinstance(self.cause, ActivityTimeoutError) else None


class ChildWorkflowError(FailureError):
    """Raised in workflow code when a child workflow did not complete, or could not start.

    ``cause`` says why: the :class:`ApplicationError` (or :class:`ActivityError` chain) the
    child failed with, a :class:`WorkflowTimeoutError`, a :class:`TerminatedError`, or for a
    start that failed an :class:`ApplicationError` of type ``WorkflowAlreadyStarted``
    (another run of the workflow id is open). A parent that does not catch it fails with it,
    the chain kept, as with :class:`ActivityError`.
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str,
        workflow_type: str,
        run_id: str | None,
        initiated_event_id: int,
        cause: FailureError,
        stack_trace: str = "",
    ) -> None:
        super().__init__(message, type="ChildWorkflowError", stack_trace=stack_trace)
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self.run_id = run_id
        self.initiated_event_id = initiated_event_id
        self.cause = cause
        self.__cause__ = cause

    def __repr__(self) -> str:
        return (f"ChildWorkflowError({self.message!r}, workflow_type={self.workflow_type!r}, "
                f"workflow_id={self.workflow_id!r}, run_id={self.run_id!r}, cause={self.cause!r})")


class TerminatedError(FailureError):
    """A workflow was terminated (the cause of a :class:`ChildWorkflowError`, or of the
    client's :class:`WorkflowFailureError`); ``reason`` is what the terminate said (empty
    for a run terminated by a build before runs kept it)."""

    def __init__(self, reason: str = "", *, stack_trace: str = "") -> None:
        super().__init__(f"workflow terminated: {reason}" if reason else "workflow terminated",
                         type="TerminatedError", stack_trace=stack_trace)
        self.reason = reason


class WorkflowTimeoutError(FailureError):
    """A workflow ran out of time (its execution or run timeout; the cause of a
    :class:`ChildWorkflowError` or of the client's :class:`WorkflowFailureError`)."""

    def __init__(self, *, stack_trace: str = "") -> None:
        super().__init__("workflow timed out", type="WorkflowTimeoutError", stack_trace=stack_trace)


class WorkflowFailureError(KadenceError):
    """Client side: the workflow did not complete: failed, timed out (``cause`` a
    :class:`WorkflowTimeoutError`), was terminated (a :class:`TerminatedError`) or canceled (a
    :class:`CanceledError`).

    ``status`` is the run's final status; ``failure`` the ``kadence.Failure`` as a dict when
    the workflow failed, and ``cause`` the same failure rebuilt as an exception: an
    :class:`ApplicationError` with the type and message the workflow raised, or, when an
    activity's error went uncaught, an :class:`ActivityError` whose ``cause`` is the
    activity's own error.
    """

    def __init__(self, status: str, failure: Mapping[str, Any] | None = None, *,
                 cause: FailureError | None = None) -> None:
        message = f"workflow {status_words(status)}"
        if failure is not None:
            message += f": {failure.get('message', '')}"
        super().__init__(message)
        self.status = status
        self.failure: Mapping[str, Any] | None = failure
        self.cause: FailureError | None = cause
        if cause is None and failure is None:
            # As Temporal's client: a terminated or timed-out run has its own error as the cause
            # (the termination's reason is in its WorkflowExecutionTerminated event).
            if status == "Terminated":
                cause = TerminatedError()
            elif status == "TimedOut":
                cause = WorkflowTimeoutError()
            self.cause = cause
        if cause is not None:
            self.__cause__ = cause
        elif failure is not None:
            # Imported here: _failure depends on this module.
            from kadence._failure import exception_from_failure

            self.cause = exception_from_failure(failure)
            self.__cause__ = self.cause


_STATUS_WORDS = {"TimedOut": "timed out", "ContinuedAsNew": "continued as new"}


def status_words(status: str) -> str:
    """A run's close status as words: ``TimedOut`` is "timed out", ``Failed`` "failed"."""
    return _STATUS_WORDS.get(status, status.lower())


class WorkflowUpdateFailedError(KadenceError):
    """Client side: an update did not return a value. ``rejected`` is true when its validator
    (or the workflow, not knowing the update) refused it, and nothing was recorded; false when
    its handler raised. ``cause`` is the error rebuilt from the ``kadence.Failure`` (an
    :class:`ApplicationError` with the type and message raised in the workflow)."""

    def __init__(self, update_id: str, failure: Mapping[str, Any], *, rejected: bool) -> None:
        super().__init__(f"update {update_id} {'rejected' if rejected else 'failed'}: {failure.get('message', '')}")
        self.update_id = update_id
        self.failure: Mapping[str, Any] = failure
        self.rejected = rejected
        from kadence._failure import exception_from_failure  # _failure depends on this module

        self.cause: FailureError = exception_from_failure(failure)
        self.__cause__ = self.cause


class PayloadError(KadenceError, ValueError):
    """A value cannot be sent as a payload (workflow or activity arguments and results,
    signal and query arguments, heartbeat details): it is not strict JSON, such as NaN or
    infinity, or an object JSON has no form for. The message names the value's place
    (``argument 1 of Greet.run: NaN is not JSON``)."""


class NonDeterminismError(KadenceError):
    """Workflow code produced commands that do not match the recorded history."""


class WorkflowTaskError(KadenceError):
    """Workflow code raised an exception that is not a :class:`FailureError`.

    The worker fails the workflow *task* (not the workflow), so a fixed version of the code
    can be deployed and the task retried.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause


class RPCError(KadenceError):
    """The frontend answered an HTTP call with an error.

    ``status`` is the HTTP status, ``error_type`` the ``error`` field of the body,
    ``field`` the request field it names (if any), ``retry_after`` the seconds the frontend
    asked the caller to wait before trying again (its ``Retry-After``; 0: it did not say).
    """

    def __init__(self, status: int, error_type: str, message: str, field: str | None = None, *,
                 retry_after: float = 0.0) -> None:
        super().__init__(f"{error_type} ({status}): {message}" + (f" [field {field}]" if field else ""))
        self.status = status
        self.error_type = error_type
        self.message = message
        self.field = field
        self.retry_after = retry_after
        # Server-side trouble, throttling and lost connections (status 0) may go away; a
        # rejected request will not.
        self.retryable = status >= 500 or status in (0, 429)


class WorkflowAlreadyStartedError(RPCError):
    """A workflow with this id is already running."""


class WorkflowAlreadyClosedError(RPCError):
    """The run closed before an update of it completed (an older frontend: a cancel of a closed run)."""


class AsyncActivityCancelledError(KadenceError):
    """An async activity's heartbeat (``AsyncActivityHandle.heartbeat``) learnt that the
    activity is to stop: its workflow cancelled it. Report how it stopped with
    ``report_cancellation`` (or ``complete``/``fail``)."""


class WorkflowNotFoundError(RPCError):
    """No such workflow (or run)."""


class ActivityNotFoundError(RPCError):
    """An async activity handle's call found no attempt to act on (404 ``ActivityNotFound``):
    by task token, the attempt is over (it finished, timed out or was retried, or its run
    closed: a stale token); by ids, no attempt of the activity runs now, or the caller may
    not poll its task queue. Temporal's Java SDK calls this ``ActivityNotExistsException``.
    A workflow that does not exist is still ``WorkflowNotFoundError``."""


class QueryFailedError(RPCError):
    """The workflow's query handler failed or does not exist."""


class ResourceExhaustedError(RPCError):
    """The frontend refused the call (429): the namespace is over one of its limits on that
    frontend (docs/security.md). ``limit`` names it (``rps``, ``concurrent_polls``,
    ``visibility_rps`` or ``answer_rps``), ``limit_value`` its value, ``retry_after`` the seconds to wait before
    trying again. Starts, signals and the other calls with a request id are retried after that
    wait within the client's retry budget; other calls raise this."""

    def __init__(self, status: int, error_type: str, message: str, field: str | None = None, *,
                 namespace: str = "", limit: str = "", limit_value: float | None = None,
                 retry_after: float = 1.0) -> None:
        super().__init__(status, error_type, message, field, retry_after=retry_after)
        self.namespace = namespace
        self.limit = limit
        self.limit_value = limit_value


class WorkerRefusedError(RPCError):
    """The frontend refused a worker's polls (401 or 403) several times in a row: its
    credential does not verify, or grants no polling of the task queue. ``Worker.run()``
    raises it rather than retrying forever (docs/sdk.md)."""

    def __init__(self, refused: RPCError, path: str, times: int) -> None:
        super().__init__(refused.status, refused.error_type,
                         f"the frontend refused this worker's polls of {path} {times} times in a row"
                         f" ({refused.message}); check the worker's api_key and its grants", refused.field)
        self.path = path
