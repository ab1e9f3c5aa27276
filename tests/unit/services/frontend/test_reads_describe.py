"""describe() of a closed run answers what closed it: a failure, a cancel's details."""

from __future__ import annotations

from typing import Any

from services.frontend.reads import Execution, describe


def _run(status: str, summary: dict[str, Any]) -> Execution:
    return Execution("default", "order-1", "run-1", "Order", "orders", status, 1, 2, 5, summary)


def test_a_failed_run_answers_its_failure_and_a_canceled_one_its_details() -> None:
    failure = {"message": "no such customer", "type": "NotFound", "non_retryable": True}
    failed = describe(_run("Failed", {"status": "Failed", "failure": failure, "cancel_details": None}))
    assert (failed["failure"], failed["cancel_details"]) == (failure, None)
    canceled = describe(_run("Canceled", {"status": "Canceled", "failure": None, "cancel_details": '"by ops"'}))
    assert (canceled["failure"], canceled["cancel_details"]) == (None, '"by ops"')


def test_a_summary_without_the_fields_reads_as_null() -> None:
    old = describe(_run("Completed", {}))
    assert (old["failure"], old["cancel_details"], old["status"]) == (None, None, "Completed")
