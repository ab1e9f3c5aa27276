"""The server's activity retry rule, for what the SDK retries itself (local activities) and
what it stands in for (kadence.testing): milliseconds until the next attempt, or None.

It must stay equal to services/history/engine.py ``retry_backoff`` (a unit test checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_RETRY", "retry_backoff"]

#: The server's default activity retry policy (services/history/engine.py DEFAULT_RETRY).
DEFAULT_RETRY: Mapping[str, Any] = {"initial_interval_ms": 1000, "backoff_coefficient": 2.0,
                                    "maximum_interval_ms": 0, "maximum_attempts": 0,
                                    "non_retryable_error_types": []}


def retry_backoff(policy: Mapping[str, Any] | None, attempt: int, now_ms: int, first_scheduled_ms: int,
                  schedule_to_close_ms: int, error_type: str, non_retryable: bool) -> int | None:
    """Milliseconds until the attempt after ``attempt``, or None when ``attempt`` was the last."""
    policy = policy or DEFAULT_RETRY
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
    if schedule_to_close_ms and now_ms + backoff >= first_scheduled_ms + schedule_to_close_ms:
        return None
    return backoff
