"""Frontend: the public HTTP/JSON API (transport → handlers → engine)."""

from .app import FrontendService, build_app
from .errors import (
    DeadlineExceeded,
    FrontendError,
    InvalidArgument,
    NotFound,
    QueryFailed,
    RequestRefused,
    Unavailable,
    WorkflowAlreadyStarted,
    WorkflowNotFound,
)
from .openapi import document as openapi_document
from .tokens import TaskToken

__all__ = [
    "DeadlineExceeded",
    "FrontendError",
    "FrontendService",
    "InvalidArgument",
    "NotFound",
    "QueryFailed",
    "RequestRefused",
    "TaskToken",
    "Unavailable",
    "WorkflowAlreadyStarted",
    "WorkflowNotFound",
    "build_app",
    "openapi_document",
]
