"""Child workflows meet cancellation (2 shards, real broker and PostgreSQL): a parent closed
with parent close policy RequestCancel gets its child canceled (the child's code sees
asyncio.CancelledError and the child closes Canceled), and a child closed as Canceled
reaches its parent as ChildWorkflowError whose cause is the SDK's CanceledError."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kadence import CanceledError, ChildWorkflowError, Client, Worker, WorkflowFailureError, workflow
from services.cluster import Cluster

from ..helpers import eventually
from .test_child_workflows import _ids_on_two_shards, _types


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-child-cancel"
# Workflow ids whose code saw the cancellation (the worker runs in this process).
SAW_CANCEL: set[str] = set()


@workflow.defn
class Waiter:
    """Waits for ever; a cancellation is noted, then let out so that the run closes Canceled."""

    @workflow.run
    async def run(self) -> None:
        try:
            await workflow.wait_condition(lambda: False)
        except asyncio.CancelledError:
            SAW_CANCEL.add(workflow.info().workflow_id)
            raise


@workflow.defn
class CancelingParent:
    """Starts a child with close policy RequestCancel and waits for ever."""

    @workflow.run
    async def run(self, child_id: str) -> None:
        await workflow.start_child_workflow(Waiter.run, id=child_id,
                                            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL)
        await workflow.wait_condition(lambda: False)


@workflow.defn
class WaitingParent:
    """Awaits a child and says what the error it got was made of."""

    @workflow.run
    async def run(self, child_id: str) -> str:
        try:
            await workflow.execute_child_workflow(Waiter.run, id=child_id)
        except ChildWorkflowError as err:
            return f"{type(err.cause).__module__}.{type(err.cause).__name__} {list(err.cause.details)}" \
                if isinstance(err.cause, CanceledError) else repr(err.cause)
        return "completed"


@workflow.defn
class CleaningChild:
    """Waits for ever; canceled, it runs a cleanup step (a timer) before it closes Canceled."""

    @workflow.run
    async def run(self) -> None:
        try:
            await workflow.wait_condition(lambda: False)
        except asyncio.CancelledError:
            await workflow.sleep(0.2)  # cleanup that takes a while: the parent waits for it
            SAW_CANCEL.add(workflow.info().workflow_id)
            raise


@workflow.defn
class AwaitingParent:
    """Awaits its child (default parent close policy, Terminate) and lets a cancellation out."""

    @workflow.run
    async def run(self, child_id: str) -> None:
        await workflow.execute_child_workflow(CleaningChild.run, id=child_id)


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Waiter, CancelingParent, WaitingParent, CleaningChild,
                                                        AwaitingParent])


async def _child_started(client: Client, parent_id: str) -> None:
    async def started() -> bool:
        children = (await client.get_workflow_handle(parent_id).describe())["pending_children"]
        return [c["state"] for c in children] == ["Started"]

    await eventually(started, what="the child started")


async def test_a_parent_closed_with_request_cancel_cancels_its_child(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        await client.start_workflow(CancelingParent.run, child_id, id=parent_id, task_queue=QUEUE)
        await _child_started(client, parent_id)
        await client.get_workflow_handle(parent_id).terminate("done with it")
        with pytest.raises(WorkflowFailureError) as caught:
            await client.get_workflow_handle(child_id).result(timeout=30)
    assert caught.value.status == "Canceled" and isinstance(caught.value.cause, CanceledError)
    assert child_id in SAW_CANCEL
    events = await client.get_workflow_handle(child_id).history()
    requested: list[dict[str, Any]] = [e for e in events if e["event_type"] == "WorkflowExecutionCancelRequested"]
    assert len(requested) == 1
    assert requested[0]["attributes"]["identity"] == "kadence-history"
    assert "parent close policy RequestCancel" in requested[0]["attributes"]["reason"]
    assert _types(events)[-1] == "WorkflowExecutionCanceled"


async def test_a_canceled_child_reaches_its_parent_with_a_canceled_error_cause(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        parent = await client.start_workflow(WaitingParent.run, child_id, id=parent_id, task_queue=QUEUE)
        await _child_started(client, parent_id)
        await client.get_workflow_handle(child_id).cancel("stop the child")
        result = await asyncio.wait_for(parent.result(), 30)
    assert result == "kadence.exceptions.CanceledError []"
    assert "ChildWorkflowExecutionCanceled" in _types(await parent.history())


async def test_a_parent_canceled_while_awaiting_its_child_cancels_the_child_and_waits_for_it(
        client: Client) -> None:
    """As in Temporal: cancelling the wait for a child asks the child to cancel, and the
    wait ends once the child has closed, so the child's cleanup runs (it was terminated by
    the parent close policy before, its cleanup never run)."""
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        parent = await client.start_workflow(AwaitingParent.run, child_id, id=parent_id, task_queue=QUEUE)
        await _child_started(client, parent_id)
        await parent.cancel("stop everything")
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(parent.result(), 30)
        assert caught.value.status == "Canceled"
        with pytest.raises(WorkflowFailureError) as child:
            await client.get_workflow_handle(child_id).result(timeout=30)
    assert child.value.status == "Canceled" and child_id in SAW_CANCEL
    child_events = await client.get_workflow_handle(child_id).history()
    requested = [e for e in child_events if e["event_type"] == "WorkflowExecutionCancelRequested"]
    assert len(requested) == 1 and f"canceled by its parent {parent_id}" in requested[0]["attributes"]["reason"]
    assert "WorkflowExecutionSignaled" not in _types(child_events)
    parent_types = _types(await parent.history())
    # The parent closed after its child: it heard of the child's close first.
    assert parent_types.index("ChildWorkflowExecutionCanceled") < parent_types.index("WorkflowExecutionCanceled")
