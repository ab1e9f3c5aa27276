"""The failure chain: an activity's own error survives the trip through history to the
workflow and on to the client, as ActivityError -> ApplicationError with the original type,
message, details, non-retryable flag and stack trace."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from kadence import RetryPolicy, workflow
from kadence._failure import exception_from_failure, failure_from_exception
from kadence.common import RetryState
from kadence.exceptions import (
    ActivityError,
    ActivityTimeoutError,
    ApplicationError,
    WorkflowFailureError,
)
from tests.unit._fake_history import Driver, FakeHistory

pytestmark = pytest.mark.timeout(30)


def _raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as user code would raise it."""
    try:
        raise exc  # noqa: TRY301 - a traceback is what this gives
    except BaseException as err:  # noqa: BLE001 - handed back to the test
        return err


def test_activity_failure_chain_round_trips() -> None:
    cause = _raised(ApplicationError("card declined", {"card": "1234"}, type="CardDeclined", non_retryable=True))
    failure = failure_from_exception(cause)
    assert failure["type"] == "CardDeclined" and "card declined" in failure["stack_trace"]
    error = ActivityError("activity charge (id 1) failed: card declined", activity_id="1", activity_type="charge",
                          scheduled_event_id=5, cause=exception_from_failure(failure),
                          retry_state=RetryState.NON_RETRYABLE_FAILURE)
    rebuilt = exception_from_failure(failure_from_exception(error))
    assert isinstance(rebuilt, ActivityError)
    assert (rebuilt.activity_type, rebuilt.activity_id, rebuilt.scheduled_event_id) == ("charge", "1", 5)
    assert rebuilt.retry_state is RetryState.NON_RETRYABLE_FAILURE
    inner = rebuilt.cause
    assert isinstance(inner, ApplicationError) and rebuilt.__cause__ is inner
    assert (inner.type, inner.message, inner.details, inner.non_retryable) == (
        "CardDeclined", "card declined", ({"card": "1234"},), True)
    assert inner.stack_trace == failure["stack_trace"]  # where the activity raised it


def test_plain_exception_keeps_its_class_name_as_type() -> None:
    failure = failure_from_exception(_raised(ValueError("bad amount")))
    rebuilt = exception_from_failure(failure)
    assert isinstance(rebuilt, ApplicationError)
    assert (rebuilt.type, rebuilt.message, rebuilt.non_retryable) == ("ValueError", "bad amount", False)
    assert "ValueError: bad amount" in rebuilt.stack_trace


def test_timeout_cause_round_trips() -> None:
    error = ActivityError("timed out", activity_id="a", activity_type="slow", scheduled_event_id=3,
                          cause=ActivityTimeoutError("ScheduleToClose", last_heartbeat_details=[1, "x"]),
                          retry_state=RetryState.TIMEOUT)
    rebuilt = exception_from_failure(failure_from_exception(error))
    assert isinstance(rebuilt, ActivityError) and isinstance(rebuilt.cause, ActivityTimeoutError)
    assert rebuilt.timeout_type == "ScheduleToClose"
    assert rebuilt.cause.last_heartbeat_details == (1, "x")


def test_re_raised_cause_keeps_its_original_stack_trace() -> None:
    original = exception_from_failure(failure_from_exception(_raised(KeyError("k"))))
    again = _raised(original)  # the workflow re-raises the activity's error
    assert failure_from_exception(again)["stack_trace"] == original.stack_trace


def test_an_application_error_typed_activity_error_is_not_mistaken_for_the_chain() -> None:
    failure = {"message": "m", "type": "ActivityError", "details": json.dumps([{"x": 1}])}
    rebuilt = exception_from_failure(failure)
    assert isinstance(rebuilt, ApplicationError) and rebuilt.details == ({"x": 1},)


def test_client_error_has_the_chain_as_cause() -> None:
    error = ActivityError("failed", activity_id="1", activity_type="charge", scheduled_event_id=5,
                          cause=ApplicationError("card declined", type="CardDeclined"))
    client_side = WorkflowFailureError("Failed", failure_from_exception(error))
    assert isinstance(client_side.cause, ActivityError)
    assert isinstance(client_side.cause.cause, ApplicationError)
    assert client_side.cause.cause.type == "CardDeclined"


@workflow.defn
class Charging:
    @workflow.run
    async def run(self) -> str:
        return str(await workflow.execute_activity("charge", start_to_close_timeout=timedelta(seconds=5),
                                                   retry_policy=RetryPolicy(maximum_attempts=3)))


def test_uncaught_activity_failure_fails_the_workflow_with_the_chain() -> None:
    history = FakeHistory("Charging")
    driver = Driver(Charging, history)
    driver.step()
    history.fail_activity("1", "card declined", retry_backoff_ms=None, type="CardDeclined")
    commands = driver.next_task()
    assert commands[0]["command_type"] == "FailWorkflowExecution"
    rebuilt = exception_from_failure(commands[0]["attributes"]["failure"])
    assert isinstance(rebuilt, ActivityError)
    assert rebuilt.activity_type == "charge" and rebuilt.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert isinstance(rebuilt.cause, ApplicationError)
    assert (rebuilt.cause.type, rebuilt.cause.message) == ("CardDeclined", "card declined")
