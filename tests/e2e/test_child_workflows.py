"""Child workflows through the whole Kadence (2 shards, real broker and PostgreSQL): a
child on the other shard than its parent completes and the parent gets its result after
signalling it; a failing child reaches the parent as ChildWorkflowError with its cause; a
child id in use fails the start; the parent close policy terminates or abandons children
when the parent is terminated; describe lists pending children; the audit verifies."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from kadence import ApplicationError, ChildWorkflowError, Client, Replayer, Worker, WorkflowTimeoutError, workflow
from services.cluster import Cluster
from services.common import kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.history.audit import audit

from ..helpers import eventually
from .test_audit import _published


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-children"


def _ids_on_two_shards() -> tuple[str, str]:
    """A parent id and a child id whose runs live on different shards (of 2)."""
    base = uuid.uuid4().hex[:8]
    parent = f"parent-{base}"
    shard = kafka.partition_for(kafka.workflow_key("default", parent), 2)
    child = next(f"child-{base}-{i}" for i in range(100)
                 if kafka.partition_for(kafka.workflow_key("default", f"child-{base}-{i}"), 2) != shard)
    return parent, child


@workflow.defn
class Doubler:
    def __init__(self) -> None:
        self.factor: int | None = None

    @workflow.signal
    def go(self, factor: int) -> None:
        self.factor = factor

    @workflow.run
    async def run(self, n: int) -> int:
        await workflow.wait_condition(lambda: self.factor is not None)
        assert self.factor is not None
        if n < 0:
            raise ApplicationError(f"cannot double {n}", {"n": n}, type="Negative", non_retryable=True)
        return n * self.factor


@workflow.defn
class Parent:
    @workflow.run
    async def run(self, child_id: str, n: int) -> str:
        handle = await workflow.start_child_workflow(Doubler.run, n, id=child_id)
        await handle.signal(Doubler.go, 2)
        try:
            return f"result {await handle}"
        except ChildWorkflowError as err:
            assert isinstance(err.cause, ApplicationError)
            return f"child failed: {err.cause.type} {err.cause.message} {list(err.cause.details)}"


@workflow.defn
class Guardian:
    """Starts two children, one per close policy, and waits for ever."""

    @workflow.run
    async def run(self, terminated_id: str, abandoned_id: str) -> None:
        await workflow.start_child_workflow(Doubler.run, 1, id=terminated_id)
        await workflow.start_child_workflow(Doubler.run, 2, id=abandoned_id,
                                            parent_close_policy=workflow.ParentClosePolicy.ABANDON)
        await workflow.wait_condition(lambda: False)


@workflow.defn
class Clasher:
    @workflow.run
    async def run(self, child_id: str) -> str:
        try:
            await workflow.execute_child_workflow(Doubler, 1, id=child_id)
        except ChildWorkflowError as err:
            return f"{err.workflow_id}: {getattr(err.cause, 'type', None)}"
        return "started"


@workflow.defn
class Impatient:
    @workflow.run
    async def run(self, child_id: str) -> str:
        try:
            await workflow.execute_child_workflow(Doubler, 1, id=child_id, execution_timeout=timedelta(seconds=1))
        except ChildWorkflowError as err:
            return type(err.cause).__name__ if isinstance(err.cause, WorkflowTimeoutError) else repr(err.cause)
        return "completed"


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=[Doubler, Parent, Guardian, Clasher, Impatient])


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def test_a_child_on_another_shard_is_signalled_and_its_result_reaches_the_parent(
        cluster: Cluster, client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        result = await client.execute_workflow(Parent.run, child_id, 21, id=parent_id, task_queue=QUEUE)
    assert result == "result 42"
    parent = client.get_workflow_handle(parent_id)
    parent_events = await parent.history()
    assert Replayer(workflows=[Parent]).replay(parent_events, workflow_id=parent_id) == []
    kinds = _types(parent_events)
    for kind in ("StartChildWorkflowExecutionInitiated", "ChildWorkflowExecutionStarted",
                 "SignalExternalWorkflowExecutionInitiated", "ExternalWorkflowExecutionSignaled",
                 "ChildWorkflowExecutionCompleted"):
        assert kinds.count(kind) == 1, kinds
    child_events = await client.get_workflow_handle(child_id).history()
    started = child_events[0]["attributes"]
    assert started["parent_workflow_id"] == parent_id and started["parent_initiated_event_id"] == 5
    assert "WorkflowExecutionSignaled" in _types(child_events)
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs == 2


async def test_a_failing_child_raises_child_workflow_error_with_its_cause_in_the_parent(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        result = await client.execute_workflow(Parent.run, child_id, -1, id=parent_id, task_queue=QUEUE)
    assert result == "child failed: Negative cannot double -1 [{'n': -1}]"
    assert "ChildWorkflowExecutionFailed" in _types(await client.get_workflow_handle(parent_id).history())


async def test_a_child_id_in_use_fails_the_start(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        await client.start_workflow(Doubler.run, 1, id=child_id, task_queue=QUEUE)
        result = await client.execute_workflow(Clasher.run, child_id, id=parent_id, task_queue=QUEUE)
    assert result == f"{child_id}: WorkflowAlreadyStarted"
    assert "StartChildWorkflowExecutionFailed" in _types(await client.get_workflow_handle(parent_id).history())


async def test_terminating_the_parent_terminates_or_abandons_its_children_by_policy(client: Client) -> None:
    parent_id, terminated_id = _ids_on_two_shards()
    abandoned_id = f"{terminated_id}-abandoned"
    parent = client.get_workflow_handle(parent_id)
    async with _worker(client):
        await client.start_workflow(Guardian.run, terminated_id, abandoned_id, id=parent_id, task_queue=QUEUE)

        async def both_started() -> list[dict[str, Any]] | None:
            children = (await parent.describe())["pending_children"]
            return children if [c["state"] for c in children] == ["Started", "Started"] else None

        children = await eventually(both_started, what="both children started")
        assert [c["workflow_id"] for c in children] == [terminated_id, abandoned_id]
        assert [c["parent_close_policy"] for c in children] == ["Terminate", "Abandon"]
        await parent.terminate("done with it")

        async def terminated() -> bool:
            return (await client.get_workflow_handle(terminated_id).describe())["status"] == "Terminated"

        await eventually(terminated, what="the child with policy Terminate terminated")
        abandoned = client.get_workflow_handle(abandoned_id)
        await abandoned.signal(Doubler.go, 5)
        assert await asyncio.wait_for(abandoned.result(), 30) == 10


async def test_a_child_that_times_out_raises_with_a_timeout_cause(client: Client) -> None:
    parent_id, child_id = _ids_on_two_shards()
    async with _worker(client):
        result = await client.execute_workflow(Impatient.run, child_id, id=parent_id, task_queue=QUEUE)
    assert result == "WorkflowTimeoutError"
    assert "ChildWorkflowExecutionTimedOut" in _types(await client.get_workflow_handle(parent_id).history())


@pytest.fixture
async def separate(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    """Every hop through the broker, with notices (KADENCE_COLOCATE=0)."""
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, colocate=False)
    async with Cluster(settings) as c:
        yield c


async def test_between_processes_a_childs_commands_reach_a_shard_here_without_the_fetch(separate: Cluster) -> None:
    # The relay offers its own records to kadence.requests (the child's start and signal, the
    # child's outcome to its parent) to the shards in its process: history fetches with the
    # longer wait of a noticed hop, which they would otherwise wait out.
    parent_id, child_id = _ids_on_two_shards()
    client = await Client.connect(separate.url, namespace="default")
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[Parent, Doubler]):
            result = await client.execute_workflow(Parent.run, child_id, 21, id=parent_id, task_queue=QUEUE)
    finally:
        await client.close()
    assert result == "result 42"
    assert separate.history.command_notices.own >= 3
