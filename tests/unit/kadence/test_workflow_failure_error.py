"""The client's error for a run that did not complete names why in its ``cause``, as
Temporal's does: a terminated run a ``TerminatedError``, a timed-out one a
``WorkflowTimeoutError`` (they had none)."""

from __future__ import annotations

from kadence import (
    ApplicationError,
    CanceledError,
    TerminatedError,
    WorkflowFailureError,
    WorkflowTimeoutError,
)


def test_a_terminated_run_has_a_terminated_error_as_its_cause() -> None:
    err = WorkflowFailureError("Terminated")
    assert isinstance(err.cause, TerminatedError)
    assert err.__cause__ is err.cause
    assert err.status == "Terminated"


def test_a_timed_out_run_has_a_workflow_timeout_error_as_its_cause() -> None:
    err = WorkflowFailureError("TimedOut")
    assert isinstance(err.cause, WorkflowTimeoutError)
    assert err.__cause__ is err.cause


def test_a_given_cause_and_a_failure_keep_theirs() -> None:
    canceled = CanceledError("workflow canceled")
    assert WorkflowFailureError("Canceled", cause=canceled).cause is canceled
    failed = WorkflowFailureError("Failed", {"message": "boom", "type": "Boom"})
    assert isinstance(failed.cause, ApplicationError)
    assert failed.cause.type == "Boom"
