"""The client sees an activity's own error: WorkflowFailureError -> ActivityError ->
ApplicationError with the type, message, details and stack trace the activity raised."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from kadence import ApplicationError, Client, RetryPolicy, RetryState, Worker, activity, workflow
from kadence.exceptions import ActivityError, WorkflowFailureError
from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)


@activity.defn
async def charge(amount: int) -> str:
    if amount < 0:
        raise ValueError(f"negative amount {amount}")
    raise ApplicationError("card declined", {"code": 51}, type="CardDeclined", non_retryable=True)


@activity.defn
async def ratio() -> float:
    return float("nan")


@workflow.defn
class Ratio:
    @workflow.run
    async def run(self) -> float:
        return float(await workflow.execute_activity(ratio, start_to_close_timeout=timedelta(seconds=10),
                                                     retry_policy=RetryPolicy(maximum_attempts=1)))


@workflow.defn
class Checkout:
    @workflow.run
    async def run(self, amount: int) -> str:
        return str(await workflow.execute_activity(
            charge, amount, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=2)))


@workflow.defn
class CheckoutUnwrapping:
    @workflow.run
    async def run(self, amount: int) -> str:
        try:
            return str(await workflow.execute_activity(charge, amount, start_to_close_timeout=timedelta(seconds=10)))
        except ActivityError as err:
            raise err.cause from None


async def _fail(client: Client, workflow_run: object, *args: object) -> WorkflowFailureError:
    async with Worker(client, task_queue="q-chain", workflows=[Checkout, CheckoutUnwrapping, Ratio],
                      activities=[charge, ratio]):
        handle = await client.start_workflow(workflow_run, *args, id=f"chain-{uuid.uuid4().hex[:8]}",  # type: ignore[arg-type]
                                             task_queue="q-chain")
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result(timeout=30)
    return caught.value


async def test_uncaught_activity_error_reaches_the_client_as_a_chain(client: Client) -> None:
    error = await _fail(client, Checkout.run, 10)
    assert isinstance(error.cause, ActivityError)
    assert error.cause.activity_type == "charge" and error.cause.retry_state is RetryState.NON_RETRYABLE_FAILURE
    cause = error.cause.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message, cause.details, cause.non_retryable) == (
        "CardDeclined", "card declined", ({"code": 51},), True)
    assert "in charge" in cause.stack_trace


async def test_plain_exception_keeps_its_type_after_retries(client: Client) -> None:
    error = await _fail(client, Checkout.run, -1)
    assert isinstance(error.cause, ActivityError)
    assert error.cause.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
    cause = error.cause.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("ValueError", "negative amount -1")


async def test_workflow_re_raising_the_cause_fails_with_the_activity_error_itself(client: Client) -> None:
    error = await _fail(client, CheckoutUnwrapping.run, 10)
    assert isinstance(error.cause, ApplicationError)
    assert (error.cause.type, error.cause.message) == ("CardDeclined", "card declined")
    assert "in charge" in error.cause.stack_trace  # the activity's trace, not the workflow's


async def test_an_activity_returning_nan_fails_clearly_instead_of_returning_null(client: Client) -> None:
    error = await _fail(client, Ratio.run)
    assert isinstance(error.cause, ActivityError) and isinstance(error.cause.cause, ApplicationError)
    assert error.cause.cause.type == "PayloadError"
    assert error.cause.cause.message == "result of activity ratio: nan is not JSON (NaN and infinities cannot be sent)"
