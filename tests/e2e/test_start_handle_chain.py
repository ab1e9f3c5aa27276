"""The handle a start returns acts on the workflow's chain, as Temporal's does: after the run
continued as new, its signals, queries, updates, describe and cancel reach the new run
instead of being refused as aimed at a closed run; a handle pinned to a run by
``get_workflow_handle(id, run_id=...)`` still acts on that run alone."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import CanceledError, Client, Worker, WorkflowAlreadyClosedError, WorkflowFailureError, workflow
from services.cluster import Cluster

from ..helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)
QUEUE = "q-start-handle"


@workflow.defn
class Hopper:
    """Continues as new once, then counts signals and updates until told to stop."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.stop = False

    @workflow.run
    async def run(self, hop: int) -> list[str]:
        if hop == 0:
            workflow.continue_as_new(1)
        await workflow.wait_condition(lambda: self.stop)
        return self.seen

    @workflow.signal
    def note(self, text: str) -> None:
        self.seen.append(text)

    @workflow.update
    def add(self, text: str) -> int:
        self.seen.append(text)
        return len(self.seen)

    @workflow.query
    def hop(self) -> int:
        return 1 if workflow.info().continued_run_id else 0

    @workflow.signal
    def finish(self) -> None:
        self.stop = True


async def _continued(client: Client, wid: str, first_run: str | None) -> bool:
    """Whether the workflow's current run is another than ``first_run``."""
    return bool((await client.get_workflow_handle(wid).describe())["run_id"] != first_run)


async def test_a_started_handle_signals_queries_and_updates_the_run_continued_as_new(client: Client) -> None:
    wid = f"hopper-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[Hopper]):
        handle = await client.start_workflow(Hopper.run, 0, id=wid, task_queue=QUEUE)
        first = handle.run_id
        assert first and handle.result_run_id == first and handle.first_execution_run_id == first
        await eventually(lambda: _continued(client, wid, first), what="the continued run")
        second = (await client.get_workflow_handle(wid).describe())["run_id"]

        await handle.signal(Hopper.note, "signalled")
        assert await handle.execute_update(Hopper.add, "updated") == 2
        assert await handle.query(Hopper.hop) == 1
        assert (await handle.describe())["run_id"] == second
        # A handle pinned to the first run still says that run is closed.
        with pytest.raises(WorkflowAlreadyClosedError, match="ContinuedAsNew"):
            await client.get_workflow_handle(wid, run_id=first).execute_update(Hopper.add, "lost")

        await handle.signal(Hopper.finish)
        assert await handle.result(timeout=30) == ["signalled", "updated"]


async def test_a_started_handle_cancels_the_run_continued_as_new(client: Client) -> None:
    wid = f"hopper-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=QUEUE, workflows=[Hopper]):
        handle = await client.start_workflow(Hopper.run, 0, id=wid, task_queue=QUEUE)
        await eventually(lambda: _continued(client, wid, handle.run_id), what="the continued run")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)
        assert failed.value.status == "Canceled" and isinstance(failed.value.cause, CanceledError)
