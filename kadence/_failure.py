"""Conversion between Python exceptions and ``kadence.Failure`` records.

A ``kadence.Failure`` has no ``cause`` field, so the SDK's own chained failures carry their
chain in ``details``: an :class:`ActivityError` is recorded with type ``ActivityError`` and
``details`` a one-element array holding an object marked ``{"kadence": "ActivityError"}``
with the activity's type, id, retry state and its cause as a nested Failure; an
:class:`ActivityTimeoutError` likewise holds its timeout type and last heartbeat details,
a :class:`ChildWorkflowError` the child's id, type, run id, initiated event id and cause,
a :class:`TerminatedError` its reason, a :class:`CanceledError` its details (and a
:class:`WorkflowTimeoutError` nothing more).
Anything else is an :class:`ApplicationError` with the recorded type, message, details,
non-retryable flag and stack trace, so a failure written by another SDK still reads back.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from kadence._converter import decode_value, encode_value
from kadence.common import RetryState
from kadence.exceptions import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    CanceledError,
    ChildWorkflowError,
    FailureError,
    TerminatedError,
    WorkflowTimeoutError,
)

__all__ = ["exception_from_failure", "failure_from_exception"]

_MARK = "kadence"


def failure_from_exception(exc: BaseException) -> dict[str, Any]:
    """A ``kadence.Failure`` dict for ``exc``.

    ``type`` is the ApplicationError's explicit type or the exception's class name, so a
    retry policy's ``non_retryable_error_types`` can name plain exception classes.
    """
    details: str | None = None
    non_retryable = False
    if isinstance(exc, ApplicationError):
        non_retryable = exc.non_retryable
        if exc.details:
            try:
                details = encode_value(list(exc.details), what="details of the error")
            except (TypeError, ValueError):
                # Undecodable details must not hide the failure itself.
                details = encode_value([repr(d) for d in exc.details])
    elif isinstance(exc, ActivityError):
        details = encode_value([{
            _MARK: "ActivityError",
            "activity_type": exc.activity_type,
            "activity_id": exc.activity_id,
            "scheduled_event_id": exc.scheduled_event_id,
            "retry_state": None if exc.retry_state is None else exc.retry_state.value,
            "cause": failure_from_exception(exc.cause),
        }])
    elif isinstance(exc, ActivityTimeoutError):
        try:
            heartbeat: Any = encode_value(list(exc.last_heartbeat_details))
        except (TypeError, ValueError):
            heartbeat = None
        details = encode_value([{_MARK: "ActivityTimeoutError", "timeout_type": exc.timeout_type,
                                 "last_heartbeat_details": heartbeat}])
    elif isinstance(exc, ChildWorkflowError):
        details = encode_value([{
            _MARK: "ChildWorkflowError",
            "workflow_id": exc.workflow_id,
            "workflow_type": exc.workflow_type,
            "run_id": exc.run_id,
            "initiated_event_id": exc.initiated_event_id,
            "cause": failure_from_exception(exc.cause),
        }])
    elif isinstance(exc, TerminatedError):
        details = encode_value([{_MARK: "TerminatedError", "reason": exc.reason}])
    elif isinstance(exc, WorkflowTimeoutError):
        details = encode_value([{_MARK: "WorkflowTimeoutError"}])
    elif isinstance(exc, CanceledError):
        # A canceled child's cause (or an activity's) read back as the same class.
        try:
            canceled: Any = encode_value(list(exc.details))
        except (TypeError, ValueError):
            canceled = None
        details = encode_value([{_MARK: "CanceledError", "details": canceled}])
    if isinstance(exc, FailureError):
        message, type_ = exc.message, exc.type
    else:
        message, type_ = str(exc), type(exc).__name__
    # A failure rebuilt from history (an activity's error re-raised by the workflow) keeps
    # the stack trace of where it was first raised.
    stack = exc.stack_trace if isinstance(exc, FailureError) else ""
    if not stack and exc.__traceback__ is not None:
        stack = "".join(traceback.format_exception(exc))
    return {
        "message": message,
        "type": type_,
        "stack_trace": stack,
        "non_retryable": non_retryable,
        "details": details,
    }


def exception_from_failure(failure: Mapping[str, Any]) -> FailureError:
    """Rebuild the exception a ``kadence.Failure`` dict records (see the module docstring)."""
    raw = failure.get("details")
    details: list[Any] = []
    if raw is not None:
        try:
            value = decode_value(raw)
        except ValueError:
            value = [raw]
        details = value if isinstance(value, list) else [value]
    message = str(failure.get("message", ""))
    stack = str(failure.get("stack_trace") or "")
    chained = _chained(failure.get("type"), message, stack, details)
    if chained is not None:
        return chained
    return ApplicationError(
        message,
        *details,
        type=str(failure.get("type") or "") or None,
        non_retryable=bool(failure.get("non_retryable", False)),
        stack_trace=stack,
    )


def _chained(type_: Any, message: str, stack: str, details: list[Any]) -> FailureError | None:
    """The SDK's own failure types, when ``details`` holds their marked record."""
    if len(details) != 1 or not isinstance(details[0], Mapping) or details[0].get(_MARK) != type_:
        return None
    info = details[0]
    try:
        if type_ == "ActivityError":
            cause = info.get("cause")
            state = info.get("retry_state")
            return ActivityError(
                message,
                activity_id=str(info["activity_id"]),
                activity_type=str(info["activity_type"]),
                scheduled_event_id=int(info.get("scheduled_event_id") or 0),
                cause=exception_from_failure(cause if isinstance(cause, Mapping) else {"message": ""}),
                retry_state=RetryState(state) if state is not None else None,
                stack_trace=stack,
            )
        if type_ == "ActivityTimeoutError":
            raw = info.get("last_heartbeat_details")
            heartbeat = decode_value(raw) if isinstance(raw, str) else None
            error = ActivityTimeoutError(str(info["timeout_type"]),
                                         last_heartbeat_details=heartbeat if isinstance(heartbeat, list) else ())
            error.stack_trace = stack
            return error
        if type_ == "ChildWorkflowError":
            cause = info.get("cause")
            run_id = info.get("run_id")
            return ChildWorkflowError(
                message,
                workflow_id=str(info["workflow_id"]),
                workflow_type=str(info["workflow_type"]),
                run_id=None if run_id is None else str(run_id),
                initiated_event_id=int(info.get("initiated_event_id") or 0),
                cause=exception_from_failure(cause if isinstance(cause, Mapping) else {"message": ""}),
                stack_trace=stack,
            )
        if type_ == "TerminatedError":
            return TerminatedError(str(info.get("reason") or ""), stack_trace=stack)
        if type_ == "WorkflowTimeoutError":
            return WorkflowTimeoutError(stack_trace=stack)
        if type_ == "CanceledError":
            raw = info.get("details")
            carried = decode_value(raw) if isinstance(raw, str) else None
            canceled = CanceledError(message, *(carried if isinstance(carried, list) else ()))
            canceled.stack_trace = stack
            return canceled
    except (KeyError, TypeError, ValueError):
        return None  # not the SDK's record after all: read it as an application error
    return None
