"""Signalling and cancelling a workflow that is not the caller's child, from workflow code
(``workflow.get_external_workflow_handle``), through the whole Kadence (2 shards, real broker
and PostgreSQL): the target's handler sees the signal once and the caller's await returns;
a missing target raises ApplicationError of type SignalExternalWorkflowExecutionFailed in
the caller's code; cancel() makes the target's code see CancelledError and close Canceled;
the handle has no namespace parameter; the caller's history replays deterministically."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import Any

import pytest

from kadence import ApplicationError, CanceledError, Client, Replayer, Worker, WorkflowFailureError, workflow
from services.cluster import Cluster
from services.common import kafka

from ..helpers import eventually

pytestmark = pytest.mark.timeout(90)
QUEUE = "q-external"


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each test's
    runs have ids of their own and close within it."""
    return module_cluster
SAW_CANCEL: set[str] = set()


def _ids_on_two_shards() -> tuple[str, str]:
    """A caller id and a target id whose runs live on different shards (of 2)."""
    base = uuid.uuid4().hex[:8]
    caller = f"caller-{base}"
    shard = kafka.partition_for(kafka.workflow_key("default", caller), 2)
    target = next(f"target-{base}-{i}" for i in range(100)
                  if kafka.partition_for(kafka.workflow_key("default", f"target-{base}-{i}"), 2) != shard)
    return caller, target


@workflow.defn
class Target:
    """Collects the values it is signalled until one is "stop"; a cancellation is noted."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.signal
    def poke(self, value: str) -> None:
        self.seen.append(value)

    @workflow.run
    async def run(self) -> list[str]:
        try:
            await workflow.wait_condition(lambda: "stop" in self.seen)
        except asyncio.CancelledError:
            SAW_CANCEL.add(workflow.info().workflow_id)
            raise
        return self.seen


@workflow.defn
class Sender:
    @workflow.run
    async def run(self, target_id: str) -> str:
        handle = workflow.get_external_workflow_handle(target_id)
        await handle.signal(Target.poke, "hello")
        await handle.signal("poke", "stop")
        return f"sent to {handle.id}"


@workflow.defn
class Canceller:
    @workflow.run
    async def run(self, target_id: str) -> str:
        await workflow.get_external_workflow_handle(target_id).cancel()
        return "cancel recorded"


@workflow.defn
class Lost:
    @workflow.run
    async def run(self, target_id: str, cancel: bool) -> str:
        handle = workflow.get_external_workflow_handle(target_id)
        try:
            await (handle.cancel() if cancel else handle.signal("poke", "x"))
        except ApplicationError as err:
            return f"{err.type}: {err.message}"
        return "delivered"


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Target, Sender, Canceller, Lost])


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def _running(client: Client, workflow_id: str) -> None:
    async def started() -> bool:
        return "WorkflowTaskCompleted" in _types(await client.get_workflow_handle(workflow_id).history())
    await eventually(started, what=f"{workflow_id} ran its first task")


async def test_a_workflow_signals_another_that_is_not_its_child(client: Client) -> None:
    caller_id, target_id = _ids_on_two_shards()
    async with _worker(client):
        target = await client.start_workflow(Target.run, id=target_id, task_queue=QUEUE)
        await _running(client, target_id)
        result = await client.execute_workflow(Sender.run, target_id, id=caller_id, task_queue=QUEUE)
        assert result == f"sent to {target_id}"
        assert await asyncio.wait_for(target.result(), 30) == ["hello", "stop"]  # each seen once
    caller_events = await client.get_workflow_handle(caller_id).history()
    kinds = _types(caller_events)
    assert kinds.count("SignalExternalWorkflowExecutionInitiated") == 2, kinds
    assert kinds.count("ExternalWorkflowExecutionSignaled") == 2, kinds
    signaled = [e["attributes"] for e in caller_events if e["event_type"] == "ExternalWorkflowExecutionSignaled"]
    assert {(a["namespace"], a["workflow_id"]) for a in signaled} == {("default", target_id)}
    initiated = [e["attributes"] for e in caller_events
                 if e["event_type"] == "SignalExternalWorkflowExecutionInitiated"]
    assert [a["child_workflow_only"] for a in initiated] == [False, False]
    assert Replayer(workflows=[Sender]).replay(caller_events, workflow_id=caller_id) == []
    target_events = await target.history()
    assert _types(target_events).count("WorkflowExecutionSignaled") == 2


async def test_a_signal_or_cancel_to_a_missing_workflow_raises_in_the_callers_code(client: Client) -> None:
    caller_id, target_id = _ids_on_two_shards()
    async with _worker(client):
        signal = await client.execute_workflow(Lost.run, target_id, False, id=caller_id, task_queue=QUEUE)
        cancel = await client.execute_workflow(Lost.run, target_id, True, id=f"{caller_id}-c", task_queue=QUEUE)
    for outcome in (signal, cancel):
        assert outcome.startswith("SignalExternalWorkflowExecutionFailed:"), outcome
        assert "WorkflowNotFound" in outcome and target_id in outcome
    events = await client.get_workflow_handle(caller_id).history()
    assert "SignalExternalWorkflowExecutionFailed" in _types(events)
    assert Replayer(workflows=[Lost]).replay(events, workflow_id=caller_id) == []


async def test_a_workflow_cancels_another_that_is_not_its_child(client: Client) -> None:
    caller_id, target_id = _ids_on_two_shards()
    async with _worker(client):
        target = await client.start_workflow(Target.run, id=target_id, task_queue=QUEUE)
        await _running(client, target_id)
        result = await client.execute_workflow(Canceller.run, target_id, id=caller_id, task_queue=QUEUE)
        assert result == "cancel recorded"
        with pytest.raises(WorkflowFailureError) as caught:
            await target.result(timeout=30)
    assert caught.value.status == "Canceled" and isinstance(caught.value.cause, CanceledError)
    assert target_id in SAW_CANCEL
    requested = [e["attributes"] for e in await target.history()
                 if e["event_type"] == "WorkflowExecutionCancelRequested"]
    assert len(requested) == 1 and f"canceled by workflow {caller_id}" in requested[0]["reason"]
    caller_events = await client.get_workflow_handle(caller_id).history()
    assert "ExternalWorkflowExecutionSignaled" in _types(caller_events)
    assert Replayer(workflows=[Canceller]).replay(caller_events, workflow_id=caller_id) == []


def test_the_handle_cannot_name_another_namespace() -> None:
    # The records between runs name one namespace (validation refuses any other): the handle
    # takes none, so workflow code cannot ask for another.
    assert list(inspect.signature(workflow.get_external_workflow_handle).parameters) == ["workflow_id", "run_id"]
