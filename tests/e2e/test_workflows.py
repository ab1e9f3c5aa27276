"""Workflows written with the SDK, run end to end: frontend → Kafka → history → PostgreSQL → matching → worker."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import Client, Worker
from kadence.exceptions import QueryFailedError, WorkflowAlreadyStartedError
from services.cluster import Cluster
from tests.helpers import eventually

from .workflows import (
    ALL_ACTIVITIES,
    ALL_WORKFLOWS,
    ApprovalWorkflow,
    EchoWorkflow,
    FlakyWorkflow,
    ShoutWorkflow,
    TimeoutWorkflow,
    TimerWorkflow,
    TwoStepWorkflow,
)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)


def _worker(client: Client, queue: str) -> Worker:
    return Worker(client, task_queue=queue, workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_activity_success(client: Client) -> None:
    async with _worker(client, "q-echo"):
        assert await client.execute_workflow(EchoWorkflow.run, "hello", id=_id("echo"), task_queue="q-echo") == "hello"
        assert await client.execute_workflow(ShoutWorkflow.run, "hi", id=_id("shout"), task_queue="q-echo") == "HI!"


async def test_the_worker_that_completes_an_activity_runs_the_next_workflow_task_ahead(client: Client) -> None:
    wid = _id("ahead")
    async with _worker(client, "q-ahead"):
        assert await client.execute_workflow(TwoStepWorkflow.run, "hi", id=wid, task_queue="q-ahead") == "HI!?"
    started = [e for e in await client.get_workflow_handle(wid).history() if e["event_type"] == "WorkflowTaskStarted"]
    # The first task was handed out; the two after it ran ahead, one after the other, on
    # the worker that completed the activities.
    assert [bool(e["attributes"]["ran_ahead_id"]) for e in started] == [False, True, True]

    wid = _id("no-ahead")
    worker = Worker(client, task_queue="q-no-ahead", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES,
                    run_ahead=False)
    async with worker:
        assert await client.execute_workflow(TwoStepWorkflow.run, "hi", id=wid, task_queue="q-no-ahead") == "HI!?"
    started = [e for e in await client.get_workflow_handle(wid).history() if e["event_type"] == "WorkflowTaskStarted"]
    assert [bool(e["attributes"]["ran_ahead_id"]) for e in started] == [False, False, False]


async def test_a_start_can_wait_for_the_outcome_in_the_same_call(client: Client) -> None:
    key = _id("wait")
    body = {"workflow_id": key, "workflow_type": "EchoWorkflow", "task_queue": "q-wait", "input": ["x"],
            "wait_seconds": 0.3}
    # No worker yet: the wait runs out and the outcome says Running.
    answer = await client.transport.call("POST", "/workflows", body=body)
    assert answer["run_id"] and answer["outcome"]["status"] == "Running"
    async with _worker(client, "q-wait"):
        # The SDK's execute_workflow starts and waits in one call; a retry of the same
        # start (same request id) waits on the same run.
        again = await client.transport.call("POST", "/workflows", body={**body, "workflow_id": _id("wait"),
                                                                          "request_id": key, "wait_seconds": 30})
        assert again["outcome"] == {"status": "Completed", "run_id": again["run_id"], "result": '"x"'}
        assert await client.execute_workflow(EchoWorkflow.run, "y", id=_id("wait"), task_queue="q-wait") == "y"
    assert await client.get_workflow_handle(key).result() == "x"


async def test_a_start_retried_long_after_the_run_closed_answers_at_once(client: Client, cluster: Cluster) -> None:
    key = _id("old")
    async with _worker(client, "q-old"):
        assert await client.execute_workflow(EchoWorkflow.run, "x", id=key, task_queue="q-old", request_id=key) == "x"
    # The frontend no longer remembers that close (10,000 closes ago, say): the retried start
    # finds the run closed by its status, not by a wait for a close that already happened.
    cluster.frontend._closes._recent.clear()  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    begun = loop.time()
    assert await client.execute_workflow(EchoWorkflow.run, "x", id=key, task_queue="q-old", request_id=key) == "x"
    assert loop.time() - begun < 2.0


async def test_a_result_too_large_for_the_close_notification_is_read_from_the_run(client: Client) -> None:
    big = "é" * 6000  # about 12 KB of JSON: the notification names the run only
    async with _worker(client, "q-big"):
        assert await client.execute_workflow(EchoWorkflow.run, big, id=_id("big"), task_queue="q-big") == big


async def test_activity_fails_twice_then_succeeds(client: Client) -> None:
    key = _id("flaky")
    async with _worker(client, "q-flaky"):
        result = await client.execute_workflow(FlakyWorkflow.run, key, id=key, task_queue="q-flaky")
    assert result == f"{key} after 3 attempts"
    handle = client.get_workflow_handle(key)
    events = await handle.history()
    # The two failed attempts left no events: the third, which completed, names them.
    assert not [e for e in events if e["event_type"] == "ActivityTaskFailed"]
    (started,) = [e for e in events if e["event_type"] == "ActivityTaskStarted"]
    assert started["attributes"]["attempt"] == 3
    assert started["attributes"]["last_failure"]["message"] == f"attempt 2 of {key} fails"


async def test_activity_start_to_close_timeout_then_retry(client: Client) -> None:
    key = _id("stc")
    async with _worker(client, "q-stc"):
        result = await client.execute_workflow(TimeoutWorkflow.run, key, id=key, task_queue="q-stc")
    assert result == f"{key} on attempt 2"
    events = await client.get_workflow_handle(key).history()
    # The timed-out attempt left no event: the one that completed names it.
    assert not [e for e in events if e["event_type"] == "ActivityTaskTimedOut"]
    (started,) = [e for e in events if e["event_type"] == "ActivityTaskStarted"]
    assert started["attributes"]["attempt"] == 2
    assert started["attributes"]["last_failure"]["message"] == "activity timed out (StartToClose)"


async def test_two_second_durable_timer(client: Client) -> None:
    async with _worker(client, "q-timer"):
        loop = asyncio.get_running_loop()
        began = loop.time()
        slept = await client.execute_workflow(TimerWorkflow.run, 2.0, id=_id("timer"), task_queue="q-timer")
        elapsed = loop.time() - began
    assert slept >= 2.0
    assert elapsed >= 2.0


async def test_signal_unblocks_wait_condition_and_query_reads_state(client: Client) -> None:
    async with _worker(client, "q-signal"):
        handle = await client.start_workflow(ApprovalWorkflow.run, id=_id("approval"), task_queue="q-signal")
        async def waiting() -> bool:  # the worker answers queries once the run's start is in history
            try:
                return await handle.query(ApprovalWorkflow.status) == "waiting"
            except QueryFailedError:
                return False
        await eventually(waiting, what="the query answering 'waiting'")
        await handle.signal(ApprovalWorkflow.approve, "ada")
        assert await handle.result() == "approved by ada"
        assert await handle.query(ApprovalWorkflow.status) == "approved"


async def test_duplicate_start_with_same_request_id(client: Client) -> None:
    wid = _id("dup")
    request_id = uuid.uuid4().hex
    first = await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="q-dup", request_id=request_id)
    again = await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="q-dup", request_id=request_id)
    assert again.run_id == first.run_id
    with pytest.raises(WorkflowAlreadyStartedError):
        await client.start_workflow(ApprovalWorkflow.run, id=wid, task_queue="q-dup")
