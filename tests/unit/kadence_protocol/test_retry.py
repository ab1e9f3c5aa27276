"""The one retry rule (kadence_protocol/retry.py) that activities, workflow runs, local
activities and the test environment all follow."""

from __future__ import annotations

import pytest

from kadence_protocol.retry import DEFAULT_RETRY, next_backoff

POLICY = {"initial_interval_ms": 100, "backoff_coefficient": 2.0, "maximum_interval_ms": 350,
          "maximum_attempts": 4, "non_retryable_error_types": ["Fatal"]}


@pytest.mark.parametrize(("attempt", "expected"), [(1, 100), (2, 200), (3, 350), (4, None)])
def test_the_interval_grows_to_its_ceiling_and_the_attempts_run_out(attempt: int, expected: int | None) -> None:
    assert next_backoff(POLICY, attempt, "E", False, 0) == expected


def test_a_non_retryable_failure_is_the_last() -> None:
    assert next_backoff(POLICY, 1, "Fatal", False, 0) is None
    assert next_backoff(POLICY, 1, "E", True, 0) is None


def test_no_attempt_starts_at_or_after_the_deadline() -> None:
    assert next_backoff(POLICY, 2, "E", False, 1_000, deadline_ms=1_201) == 200
    assert next_backoff(POLICY, 2, "E", False, 1_000, deadline_ms=1_200) is None


def test_the_default_policy_retries_forever_up_to_a_hundred_times_the_first_interval() -> None:
    assert next_backoff(DEFAULT_RETRY, 1, "E", False, 0) == 1_000
    assert next_backoff(DEFAULT_RETRY, 10_000, "E", False, 0) == 100_000  # no overflow, at the ceiling
