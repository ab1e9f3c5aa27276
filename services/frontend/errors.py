"""The errors the public API answers with; every one derives from ``FrontendError``.

Each class carries its HTTP status and the ``error`` name put on the wire, so the
error middleware maps any of them to ``{"error", "message", "field"}`` in one place.
"""

from __future__ import annotations

from typing import Any

# What every 503 of the API (and the web UI's for the database) tells the caller to wait before
# trying again, in seconds.
RETRY_AFTER_S = "1"


class FrontendError(Exception):
    """Root of every frontend error."""

    status = 500
    error = "Internal"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, "field": self.field, **self.extra}

    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the body's."""
        return {}


class InvalidArgument(FrontendError):
    status = 400
    error = "InvalidArgument"


class WorkflowNotFound(FrontendError):
    status = 404
    error = "WorkflowNotFound"


class NotFound(FrontendError):
    status = 404
    error = "NotFound"


class ActivityNotFound(NotFound):
    """No attempt of the activity runs: an async completion's token is stale (the attempt
    finished, timed out, was retried, or its run closed), or by ids no such activity runs
    (or it runs on a task queue the caller may not poll: the answer is the same)."""

    error = "ActivityNotFound"


class WorkflowAlreadyStarted(FrontendError):
    status = 409
    error = "WorkflowAlreadyStarted"


class WorkflowAlreadyClosed(FrontendError):
    """The run an update names closed before the update completed."""

    status = 409
    error = "WorkflowAlreadyClosed"


class QueryFailed(FrontendError):
    status = 400
    error = "QueryFailed"


class RequestRefused(FrontendError):
    """History refused a command for a reason without a status of its own."""

    status = 400

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error or "RequestRefused"


class RecordTooLarge(FrontendError):
    """The command's record is larger than the broker takes: sent again it is refused again,
    so it is not a 503 to come back after."""

    status = 413
    error = "RequestEntityTooLarge"


class Unavailable(FrontendError):
    """The broker (or another dependency) cannot take the request now: come back (Retry-After),
    as for every 503. A command the broker did not acknowledge within the bound may still be
    applied; sent again with the same request id it is applied at most once."""

    status = 503
    error = "Unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER_S}


class Busy(Unavailable):
    """History has not answered a command within the frontend's bound (KADENCE_REPLY_TIMEOUT_MS,
    engine.REPLY_TIMEOUT by default): the caller is told to come back (Retry-After) rather than
    held. The command may still be applied; sent again with the same request id it is applied
    at most once."""


class ResourceExhausted(FrontendError):
    """The namespace is over one of its limits on this frontend (quotas.py): try again after
    ``retry_after_ms``. The body names the namespace, the limit (``rps``, ``concurrent_polls``,
    ``visibility_rps`` or ``answer_rps``) and its value."""

    status = 429
    error = "ResourceExhausted"

    def headers(self) -> dict[str, str]:
        # Retry-After takes whole seconds (RFC 9110); the body's retry_after_ms is exact.
        return {"Retry-After": str(max(1, -(-int(self.extra.get("retry_after_ms", 1000)) // 1000)))}


class DeadlineExceeded(FrontendError):
    status = 504
    error = "DeadlineExceeded"


class PermissionDenied(FrontendError):
    """The caller may not do this (a task token not issued by this server, or for another namespace)."""

    status = 403
    error = "PermissionDenied"


class NamespaceNotFound(FrontendError):
    """The namespace in the path is not registered (services/common/namespaces.py)."""

    status = 404
    error = "NamespaceNotFound"


class NamespaceAlreadyExists(FrontendError):
    status = 409
    error = "NamespaceAlreadyExists"


class ScheduleNotFound(FrontendError):
    status = 404
    error = "ScheduleNotFound"


class ScheduleAlreadyExists(FrontendError):
    status = 409
    error = "ScheduleAlreadyExists"
