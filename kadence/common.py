"""Values shared by workflows, activities and the client (retry policies and states, the
client's own retries, the request size limit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

# The policies and the request limit are the protocol's (the server reads them too).
from kadence_protocol.limits import MAX_REQUEST_BYTES
from kadence_protocol.policies import ParentClosePolicy, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from kadence_protocol.reset import ResetPoint

__all__ = [
    "MAX_REQUEST_BYTES",
    "ActivityCancellationType",
    "Backoff",
    "ParentClosePolicy",
    "ResetPoint",
    "RetryPolicy",
    "RetryState",
    "WorkflowIDConflictPolicy",
    "WorkflowIDReusePolicy",
    "to_millis",
]


def to_millis(value: timedelta | float | None) -> int:
    """A duration (timedelta or seconds) as whole milliseconds; None is 0 (unset)."""
    if value is None:
        return 0
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return round(seconds * 1000)


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried after a failure or a timeout.

    ``maximum_interval`` None means 100 x ``initial_interval`` (server side);
    ``maximum_attempts`` 0 means unlimited. Failures whose ``type`` is in
    ``non_retryable_error_types`` (by default an exception's class name) are not retried.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0):
            raise ValueError("RetryPolicy.initial_interval must be positive")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1.0")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy.maximum_interval must not be less than initial_interval")
        if self.maximum_attempts < 0:
            raise ValueError("RetryPolicy.maximum_attempts must be 0 (unlimited) or more")
        if isinstance(self.non_retryable_error_types, str):
            raise TypeError("RetryPolicy.non_retryable_error_types must be a sequence of names, not a str")
        # Freeze the sequence so the policy stays hashable and immutable.
        object.__setattr__(self, "non_retryable_error_types", tuple(self.non_retryable_error_types))

    def to_avro(self) -> dict[str, Any]:
        """The policy as a ``kadence.RetryPolicy`` record (durations in ms)."""
        return {
            "initial_interval_ms": to_millis(self.initial_interval),
            "backoff_coefficient": float(self.backoff_coefficient),
            "maximum_interval_ms": to_millis(self.maximum_interval),
            "maximum_attempts": int(self.maximum_attempts),
            "non_retryable_error_types": list(self.non_retryable_error_types),
        }


class ActivityCancellationType(StrEnum):
    """What cancelling the workflow code awaiting ``workflow.execute_activity`` does (Temporal's
    three kinds).

    ``TRY_CANCEL``: the activity is asked to stop and the await raises
    ``asyncio.CancelledError`` at once. ``WAIT_CANCELLATION_COMPLETED``: the activity is asked
    to stop and the await raises once it has (it reported itself canceled, or finished
    anyway). ``ABANDON``: the await raises at once and the activity is not told; it runs on.
    """

    TRY_CANCEL = "TryCancel"
    WAIT_CANCELLATION_COMPLETED = "WaitCancellationCompleted"
    ABANDON = "Abandon"


class HandlerUnfinishedPolicy(StrEnum):
    """What a signal or update handler still running when its run closes does (Temporal's).

    ``WARN_AND_ABANDON`` (default): the worker logs a warning naming the handler (the run
    should have waited for ``workflow.all_handlers_finished``). ``ABANDON``: no warning.
    """

    WARN_AND_ABANDON = "WarnAndAbandon"
    ABANDON = "Abandon"


class RetryState(StrEnum):
    """Why an activity's retries stopped (the names of Temporal's ``RetryState``)."""

    #: The failure was non-retryable (``non_retryable=True`` or a type the policy names).
    NON_RETRYABLE_FAILURE = "NonRetryableFailure"
    #: The retry policy's ``maximum_attempts`` were used up.
    MAXIMUM_ATTEMPTS_REACHED = "MaximumAttemptsReached"
    #: A timeout that is never retried fired, or the schedule-to-close time ran out.
    TIMEOUT = "Timeout"


@dataclass(frozen=True)
class Backoff:
    """How often and how long a call is tried: at most ``attempts`` times (0: no limit) and
    no retry starts after ``within`` seconds (None: no limit); waits grow from ``first`` by
    ``factor`` up to ``cap`` seconds."""

    attempts: int = 5
    within: float | None = None
    first: float = 0.1
    factor: float = 2.0
    cap: float = 5.0

    def __post_init__(self) -> None:
        # A zero, negative or NaN wait would retry in a tight loop against a frontend that is down.
        def number(value: object) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 0:
            raise ValueError(f"Backoff.attempts must be a whole number >= 0 (0: no limit), got {self.attempts!r}")
        if self.within is not None and not (number(self.within) and self.within > 0):
            raise ValueError(f"Backoff.within must be a number of seconds > 0 or None, got {self.within!r}")
        if not (number(self.first) and self.first > 0):
            raise ValueError(f"Backoff.first must be a number of seconds > 0, got {self.first!r}")
        if not (number(self.factor) and self.factor >= 1):
            raise ValueError(f"Backoff.factor must be a number >= 1, got {self.factor!r}")
        if not (number(self.cap) and self.cap >= self.first):
            raise ValueError(f"Backoff.cap must be a number of seconds >= first ({self.first}), got {self.cap!r}")
