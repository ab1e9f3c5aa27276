"""The matching client: how the frontend (and any service) reaches matching, as Cadence's
``client/matching``. Services use this package, never ``services.matching`` itself: the
client, the errors matching answers with, and the task a poll hands out."""

from .client import LocalMatchingService, MatchingClient
from .errors import (
    MatchingError,
    MatchingUnavailableError,
    NoPollerError,
    NotOwnerError,
    QueryFailedError,
    QueryTimeoutError,
    UnknownQueryError,
)
from .query_scope import QueryScope
from .tasks import ACTIVITY, KINDS, QUERY, TASK_KINDS, TASK_NAMES, WORKFLOW, MatchedTask

__all__ = [
    "ACTIVITY",
    "KINDS",
    "QUERY",
    "TASK_KINDS",
    "TASK_NAMES",
    "WORKFLOW",
    "LocalMatchingService",
    "MatchedTask",
    "MatchingClient",
    "MatchingError",
    "MatchingUnavailableError",
    "NoPollerError",
    "NotOwnerError",
    "QueryFailedError",
    "QueryScope",
    "QueryTimeoutError",
    "UnknownQueryError",
]
