"""The activity retry rule as the SDK needs it (local activities, kadence.testing): the
protocol's one rule (kadence_protocol/retry.py) with an activity's schedule-to-close deadline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kadence_protocol.retry import DEFAULT_RETRY, next_backoff

__all__ = ["DEFAULT_RETRY", "retry_backoff"]


def retry_backoff(policy: Mapping[str, Any] | None, attempt: int, now_ms: int, first_scheduled_ms: int,
                  schedule_to_close_ms: int, error_type: str, non_retryable: bool) -> int | None:
    """Milliseconds until the attempt after ``attempt``, or None when ``attempt`` was the last."""
    deadline = first_scheduled_ms + schedule_to_close_ms if schedule_to_close_ms else 0
    return next_backoff(policy or DEFAULT_RETRY, attempt, error_type, non_retryable, now_ms, deadline)
