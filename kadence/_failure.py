"""Conversion between Python exceptions and ``kadence.Failure`` records."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from kadence._converter import decode_value, encode_value
from kadence.exceptions import ApplicationError, FailureError

__all__ = ["exception_from_failure", "failure_from_exception"]


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
                details = encode_value(list(exc.details))
            except (TypeError, ValueError):
                # Undecodable details must not hide the failure itself.
                details = encode_value([repr(d) for d in exc.details])
    if isinstance(exc, FailureError):
        message, type_ = exc.message, exc.type
    else:
        message, type_ = str(exc), type(exc).__name__
    stack = "".join(traceback.format_exception(exc)) if exc.__traceback__ is not None else ""
    return {
        "message": message,
        "type": type_,
        "stack_trace": stack,
        "non_retryable": non_retryable,
        "details": details,
    }


def exception_from_failure(failure: Mapping[str, Any]) -> ApplicationError:
    """Rebuild an :class:`ApplicationError` from a ``kadence.Failure`` dict."""
    raw = failure.get("details")
    details: list[Any] = []
    if raw is not None:
        try:
            value = decode_value(raw)
        except ValueError:
            value = [raw]
        details = value if isinstance(value, list) else [value]
    return ApplicationError(
        str(failure.get("message", "")),
        *details,
        type=str(failure.get("type") or "") or None,
        non_retryable=bool(failure.get("non_retryable", False)),
        stack_trace=str(failure.get("stack_trace") or ""),
    )
