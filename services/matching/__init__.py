"""Matching: task queues over the ``kadence.tasks`` partitions, sync match and backlog."""

from .client import MatchingClient
from .errors import (
    MatchingError,
    MatchingUnavailableError,
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)
from .queues import ACTIVITY, QUERY, WORKFLOW, MatchedTask
from .service import MatchingService

__all__ = [
    "ACTIVITY",
    "QUERY",
    "WORKFLOW",
    "MatchedTask",
    "MatchingClient",
    "MatchingError",
    "MatchingService",
    "MatchingUnavailableError",
    "NoPollerError",
    "NotOwnerError",
    "QueryFailedError",
    "QueryTimeoutError",
    "UnknownQueryError",
]
