"""The exceptions of the matching service; every one derives from ``MatchingError``."""

from __future__ import annotations

from typing import Any


class MatchingError(Exception):
    """Root of every matching error."""


class NotOwnerError(MatchingError):
    """This instance does not own the task queue's partition (any more)."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"this matching instance does not own task-queue partition {partition}")
        self.partition = partition


class NoPollerError(MatchingError):
    """A query was not taken by any workflow poller within its timeout."""

    def __init__(self, task_queue: str, timeout: float) -> None:
        super().__init__(
            # Tenths of a second: the frontend hands down what is left of the query's time
            # (9.99999 s of a 10 s query), which read as an odd figure.
            f"no worker polled task queue {task_queue!r} within {round(timeout, 1):g} s to answer the query"
        )
        self.task_queue = task_queue


class QueryTimeoutError(MatchingError):
    """A worker took the query but did not answer within the timeout."""


class QueryFailedError(MatchingError):
    """The worker answered the query with a failure."""

    def __init__(self, failure: dict[str, Any]) -> None:
        super().__init__(str(failure.get("message") or "the query failed"))
        self.failure = failure


class UnknownQueryError(MatchingError):
    """An answer names a query that is not waiting here (answered, timed out, or moved)."""

    def __init__(self, query_id: str) -> None:
        super().__init__(f"no query {query_id!r} is waiting for an answer")
        self.query_id = query_id


class MatchingUnavailableError(MatchingError):
    """The owner of a partition could not be reached."""
