"""Heartbeats, continue-as-new, execution timeout, terminate and non-determinism, end to end."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from kadence import Client, Worker, workflow
from kadence.exceptions import WorkflowFailureError
from services.cluster import Cluster
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS, CountdownWorkflow, ForeverWorkflow, HeartbeatWorkflow, echo


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_heartbeat_timeout_retries_with_the_last_details(client: Client) -> None:
    key = _id("beat")
    # The timed-out first attempt hangs for 30 s: the worker's stop cancels it after 1 s, not its default 10.
    async with Worker(client, task_queue="q-beat", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES,
                      graceful_shutdown_timeout=1.0):
        result = await client.execute_workflow(HeartbeatWorkflow.run, key, id=key, task_queue="q-beat")
    assert result == f"{key} resumed at 5 on attempt 2"
    events = await client.get_workflow_handle(key).history()
    # The timed-out attempt wrote no event; the one that completed names its failure.
    assert not [e for e in events if e["event_type"] == "ActivityTaskTimedOut"]
    (started,) = [e for e in events if e["event_type"] == "ActivityTaskStarted"]
    assert started["attributes"]["attempt"] == 2
    assert started["attributes"]["last_failure"]["message"] == "activity timed out (Heartbeat)"


async def test_continue_as_new_chains_runs(client: Client) -> None:
    wid = _id("countdown")
    async with Worker(client, task_queue="q-can", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        handle = await client.start_workflow(CountdownWorkflow.run, 3, id=wid, task_queue="q-can")
        assert await handle.result() == "liftoff"
    first = await client.get_workflow_handle(wid, run_id=handle.run_id).describe()
    assert first["status"] == "ContinuedAsNew" and first["new_run_id"]
    last = await client.get_workflow_handle(wid).describe()
    assert last["status"] == "Completed" and last["run_id"] != handle.run_id


async def test_execution_timeout_and_terminate(client: Client) -> None:
    async with Worker(client, task_queue="q-end", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        timed = await client.start_workflow(ForeverWorkflow.run, id=_id("forever"), task_queue="q-end",
                                            execution_timeout=timedelta(seconds=1))
        with pytest.raises(WorkflowFailureError):
            await timed.result()
        assert (await timed.describe())["status"] == "TimedOut"

        doomed = await client.start_workflow(ForeverWorkflow.run, id=_id("doomed"), task_queue="q-end")
        await doomed.terminate("enough")
        with pytest.raises(WorkflowFailureError):
            await doomed.result()
        kinds = [e["event_type"] for e in await doomed.history()]
        assert kinds[-1] == "WorkflowExecutionTerminated"


@workflow.defn(name="Drifting")
class DriftingV1:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(0.2)
        return await workflow.execute_activity(echo, "v1", start_to_close_timeout=timedelta(seconds=5))


@workflow.defn(name="Drifting")
class DriftingV2:
    """The same workflow type, changed incompatibly: the activity comes before the timer."""

    @workflow.run
    async def run(self) -> str:
        value = await workflow.execute_activity(echo, "v2", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(0.2)
        return value


async def test_non_determinism_fails_the_task_and_leaves_history_untouched(client: Client) -> None:
    wid = _id("drift")
    async with Worker(client, task_queue="q-drift", workflows=[DriftingV1], activities=[echo]):
        handle = await client.start_workflow(DriftingV1.run, id=wid, task_queue="q-drift")
        async def timer_started() -> bool:
            return any(e["event_type"] == "TimerStarted" for e in await handle.history())
        await eventually(timer_started, what="the timer started")
    before = await handle.history()
    # A new deploy with incompatible code picks the run up after the timer fires (no cache).
    async with Worker(client, task_queue="q-drift", workflows=[DriftingV2], activities=[echo]):
        async def task_failed() -> list[dict[str, object]] | None:
            events = await handle.history()
            return events if any(e["event_type"] == "WorkflowTaskFailed" for e in events) else None
        events = await eventually(task_failed, what="a workflow task failed")
    failed = next(e for e in events if e["event_type"] == "WorkflowTaskFailed")
    assert failed["attributes"]["cause"] == "NonDeterminism"
    assert "TimerStarted" in failed["attributes"]["failure"]["message"] or "Timer" in failed["attributes"]["failure"]["message"]
    # What was recorded before stays exactly as it was; nothing the new code decided was written.
    assert events[: len(before)] == before
    assert not any(e["event_type"] == "ActivityTaskScheduled" for e in events)
    assert (await handle.describe())["status"] == "Running"
