"""External workflow handles aimed where they should not be: at the caller itself (a signal
is delivered to it; a cancel is refused at the call), at a run that continued as new meanwhile (signals
without a run id follow the chain, none lost or doubled; one pinned to the closed run fails
in the caller), and at a run id of another workflow (fails; neither run is signalled)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from kadence import ApplicationError, Client, Worker, workflow
from services.cluster import Cluster

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each uses its
    own workflow ids and task queue (conftest's ``queue``), and none stops, breaks or patches a service."""
    return module_cluster


@workflow.defn
class SelfSignaller:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.signal
    def poke(self, value: str) -> None:
        self.seen.append(value)

    @workflow.run
    async def run(self, cancel: bool) -> str:
        handle = workflow.get_external_workflow_handle(workflow.info().workflow_id)
        try:
            if cancel:
                await handle.cancel()
                await workflow.sleep(5)
                return "not cancelled"
            await handle.signal("poke", "me")
        except ApplicationError as err:
            return f"{err.type}: {err.message}"
        except asyncio.CancelledError:
            return "cancelled"
        await workflow.wait_condition(lambda: bool(self.seen))
        return ",".join(self.seen)


@workflow.defn
class Looper:
    """Continues as new after every signal; collects all it saw through its chain."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.signal
    def poke(self, value: str) -> None:
        self.seen.append(value)

    @workflow.run
    async def run(self, seen: list[str]) -> list[str]:
        await workflow.wait_condition(lambda: bool(self.seen))
        total = seen + self.seen
        if "stop" in total:
            return total
        workflow.continue_as_new(total)


@workflow.defn
class Spammer:
    @workflow.run
    async def run(self, target_id: str, n: int, run_id: str | None) -> list[str]:
        handle = workflow.get_external_workflow_handle(target_id, run_id=run_id)
        out: list[str] = []
        for i in range(n):
            try:
                await handle.signal("poke", f"s{i}")
                out.append("ok")
            except ApplicationError as err:
                out.append(f"{err.type}")
        return out


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


async def test_a_workflow_signals_itself(client: Client, queue: str) -> None:
    wid = f"self-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[SelfSignaller]):
        assert await client.execute_workflow(SelfSignaller.run, False, id=wid, task_queue=queue) == "me"


async def test_a_workflow_cancels_itself(client: Client, queue: str) -> None:
    wid = f"selfc-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[SelfSignaller]):
        h = await client.start_workflow(SelfSignaller.run, True, id=wid, task_queue=queue)
        result = await asyncio.wait_for(h.result(), 30)
    # Refused at the call, as Temporal refuses it: nothing decided, no task failed.
    assert result.startswith("CancelExternalWorkflowExecutionFailed: a workflow cannot cancel itself"), result
    kinds = _types(await h.history())
    assert not {"WorkflowExecutionCancelRequested", "SignalExternalWorkflowExecutionInitiated",
                "WorkflowTaskFailed"} & set(kinds), kinds


async def test_signals_through_a_chain_that_continues_as_new(client: Client, queue: str) -> None:
    tag = uuid.uuid4().hex[:8]
    target = f"looper-{tag}"
    async with Worker(client, task_queue=queue, workflows=[Looper, Spammer]):
        th = await client.start_workflow(Looper.run, [], id=target, task_queue=queue)
        first_run = (await th.describe())["run_id"]
        out = await client.execute_workflow(Spammer.run, target, 20, None, id=f"spam-{tag}", task_queue=queue)
        assert out == ["ok"] * 20, out
        await client.get_workflow_handle(target).signal("poke", "stop")
        got = await asyncio.wait_for(client.get_workflow_handle(target).result(), 30)
        assert sorted(got) == sorted([f"s{i}" for i in range(20)] + ["stop"]), got
        # the first run is closed: a signal pinned to it fails in the sender
        out = await client.execute_workflow(Spammer.run, target, 1, first_run, id=f"spam2-{tag}", task_queue=queue)
        assert out == ["SignalExternalWorkflowExecutionFailed"], out


async def test_run_id_of_another_workflow(client: Client, queue: str) -> None:
    tag = uuid.uuid4().hex[:8]
    async with Worker(client, task_queue=queue, workflows=[Looper, Spammer]):
        a = await client.start_workflow(Looper.run, [], id=f"a-{tag}", task_queue=queue)
        b = await client.start_workflow(Looper.run, [], id=f"b-{tag}", task_queue=queue)
        b_run = (await b.describe())["run_id"]
        out = await client.execute_workflow(Spammer.run, f"a-{tag}", 1, b_run, id=f"spam-{tag}", task_queue=queue)
        assert out == ["SignalExternalWorkflowExecutionFailed"], out
        assert "WorkflowExecutionSignaled" not in _types(await b.history())
        assert "WorkflowExecutionSignaled" not in _types(await a.history())
