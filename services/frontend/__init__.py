"""Frontend: the public HTTP/JSON API (transport → handlers → engine)."""

from .app import FrontendService, build_app
from .errors import (
    ActivityNotFound,
    DeadlineExceeded,
    FrontendError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QueryFailed,
    RequestRefused,
    Unavailable,
    WorkflowAlreadyStarted,
    WorkflowNotFound,
)
from .openapi import document as openapi_document
from .tokens import TaskToken, TokenKeys

__all__ = [
    "ActivityNotFound",
    "DeadlineExceeded",
    "FrontendError",
    "FrontendService",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QueryFailed",
    "RequestRefused",
    "TaskToken",
    "TokenKeys",
    "Unavailable",
    "WorkflowAlreadyStarted",
    "WorkflowNotFound",
    "build_app",
    "openapi_document",
]
