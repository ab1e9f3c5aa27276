"""Matching: task queues over the ``kadence.tasks`` partitions, sync match and backlog."""

from services.common.matching import ACTIVITY, QUERY, WORKFLOW, MatchedTask, MatchingClient
from services.common.matching.errors import (
    MatchingError,
    MatchingUnavailableError,
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)

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
