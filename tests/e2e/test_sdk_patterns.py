"""Common SDK patterns end to end: parallel activities, non-retryable failures, queries on
closed runs, signal-with-start, a timeout raced against a signal."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from kadence import ApplicationError, Client, RetryPolicy, Worker, activity, workflow
from kadence.exceptions import ActivityError, WorkflowFailureError
from services.cluster import Cluster

from .workflows import echo


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)


@activity.defn
async def refuse(reason: str) -> str:
    raise ApplicationError(reason, type="Refused", non_retryable=True)


@workflow.defn
class FanOut:
    @workflow.run
    async def run(self, items: list[str]) -> list[str]:
        return list(await asyncio.gather(*(
            workflow.execute_activity(echo, item, start_to_close_timeout=timedelta(seconds=10)) for item in items)))


@workflow.defn
class Refusing:
    @workflow.run
    async def run(self) -> str:
        try:
            return await workflow.execute_activity(refuse, "no", start_to_close_timeout=timedelta(seconds=10),
                                                   retry_policy=RetryPolicy(maximum_attempts=5))
        except ActivityError as err:
            raise ApplicationError(f"gave up: {err.cause}", type="GaveUp") from err


@workflow.defn
class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    @workflow.run
    async def run(self, wait_seconds: float) -> list[str]:
        try:
            await workflow.wait_condition(lambda: len(self.messages) >= 2, timeout=wait_seconds)
        except TimeoutError:
            self.messages.append("timed out")
        return self.messages

    @workflow.signal
    def post(self, message: str) -> None:
        self.messages.append(message)

    @workflow.query
    def count(self) -> int:
        return len(self.messages)


WORKFLOWS = [FanOut, Refusing, Inbox]
ACTIVITIES = [echo, refuse]


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_parallel_activities(client: Client) -> None:
    async with Worker(client, task_queue="q-fan", workflows=WORKFLOWS, activities=ACTIVITIES):
        items = [f"item-{i}" for i in range(5)]
        assert await client.execute_workflow(FanOut.run, items, id=_id("fan"), task_queue="q-fan") == items


async def test_non_retryable_failure_is_not_retried_and_fails_the_workflow(client: Client) -> None:
    wid = _id("refuse")
    async with Worker(client, task_queue="q-refuse", workflows=WORKFLOWS, activities=ACTIVITIES):
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(Refusing.run, id=wid, task_queue="q-refuse")
    events = await client.get_workflow_handle(wid).history()
    assert [e["event_type"] for e in events].count("ActivityTaskStarted") == 1
    assert events[-1]["event_type"] == "WorkflowExecutionFailed"
    assert events[-1]["attributes"]["failure"]["type"] == "GaveUp"


async def test_signal_with_start_timeout_and_query_after_close(client: Client) -> None:
    wid = _id("inbox")
    async with Worker(client, task_queue="q-inbox", workflows=WORKFLOWS, activities=ACTIVITIES):
        handle = await client.signal_with_start_workflow(Inbox.run, 1.0, id=wid, task_queue="q-inbox",
                                                         signal=Inbox.post, signal_args=["first"])
        assert await handle.result() == ["first", "timed out"]
        # The run is closed: the query is answered by replaying its history.
        assert await handle.query(Inbox.count) == 2
