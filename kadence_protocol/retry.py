"""The retry rule, one for every retry Kadence makes: activities (history), workflow runs
under a retry policy (history's retry.py), local activities (the SDK) and the in-memory
test environment. A policy is a ``RetryPolicy`` record as a dict (schemas/).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_RETRY", "next_backoff"]

#: The policy of an activity that names none: 1 s, doubling, up to 100 x, attempts unlimited.
DEFAULT_RETRY: Mapping[str, Any] = {"initial_interval_ms": 1000, "backoff_coefficient": 2.0,
                                    "maximum_interval_ms": 0, "maximum_attempts": 0,
                                    "non_retryable_error_types": []}


def next_backoff(policy: Mapping[str, Any], attempt: int, error_type: str, non_retryable: bool, now_ms: int,
                 deadline_ms: int = 0) -> int | None:
    """Milliseconds until the attempt after ``attempt``, or None when ``attempt`` was the last:
    a non-retryable failure, the attempts spent, or the next attempt would start at or after
    ``deadline_ms`` (0: none)."""
    if non_retryable or error_type in policy["non_retryable_error_types"]:
        return None
    if policy["maximum_attempts"] and attempt >= policy["maximum_attempts"]:
        return None
    initial = max(1, policy["initial_interval_ms"])
    ceiling = policy["maximum_interval_ms"] or 100 * initial
    try:
        grown = initial * float(policy["backoff_coefficient"]) ** (attempt - 1)
    except OverflowError:  # retried forever: the interval long since at the ceiling
        grown = ceiling
    backoff = int(min(grown, ceiling))
    if deadline_ms and now_ms + backoff >= deadline_ms:
        return None
    return backoff
