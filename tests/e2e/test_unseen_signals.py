"""No accepted signal goes unseen: signals racing a workflow's close, through the real stack.

A workflow that closes (returns, or continues as new) after its first signal, while many
more signals arrive at once: every signal history accepted must reach workflow code,
because history refuses a closing workflow task while inputs it did not see wait, and the
new task brings them (services/history/unseen.py).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import Client, Worker, workflow
from kadence.exceptions import WorkflowNotFoundError
from services.cluster import Cluster


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(90)

SIGNALS = 50


@workflow.defn
class FirstSignalThenCount:
    """Returns as soon as it has a signal: the count of signals it saw."""

    def __init__(self) -> None:
        self.seen = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.seen > 0)
        return self.seen

    @workflow.signal
    def hit(self, i: int) -> None:
        self.seen += 1


@workflow.defn
class CountAcrossContinueAsNew:
    """Generation 0 continues as new after its first signal, handing on its count; generation
    1 returns at once what both saw."""

    def __init__(self) -> None:
        self.seen = 0

    @workflow.run
    async def run(self, carried: int, generation: int) -> int:
        if generation == 0:
            await workflow.wait_condition(lambda: self.seen > 0)
            workflow.continue_as_new(carried + self.seen, 1)
        return carried + self.seen

    @workflow.signal
    def hit(self, i: int) -> None:
        self.seen += 1


async def _signal_all(client: Client, wid: str) -> int:
    """Send SIGNALS signals at once to the workflow's current run; how many were accepted."""
    handle = client.get_workflow_handle(wid)

    async def one(i: int) -> bool:
        try:
            await handle.signal("hit", i)
        except WorkflowNotFoundError:
            return False  # the run had closed: refused to its sender, not lost
        return True

    return sum(await asyncio.gather(*(one(i) for i in range(SIGNALS))))


async def _signaled_events(client: Client, wid: str, run_id: str | None) -> int:
    events = await client.get_workflow_handle(wid, run_id=run_id).history()
    return sum(e["event_type"] == "WorkflowExecutionSignaled" for e in events)


async def test_signals_racing_the_close_are_all_seen_by_workflow_code(client: Client) -> None:
    async with Worker(client, task_queue="q-race", workflows=[FirstSignalThenCount]):
        for _ in range(3):
            wid = f"race-{uuid.uuid4().hex[:8]}"
            handle = await client.start_workflow(FirstSignalThenCount.run, id=wid, task_queue="q-race")
            accepted = await _signal_all(client, wid)
            result = await handle.result(timeout=30)
            recorded = await _signaled_events(client, wid, handle.run_id)
            assert accepted >= 1
            assert recorded == accepted
            assert result == accepted, f"workflow code saw {result} of {accepted} accepted signals"


async def test_signals_racing_continue_as_new_are_all_seen_by_workflow_code(client: Client) -> None:
    async with Worker(client, task_queue="q-race-can", workflows=[CountAcrossContinueAsNew]):
        for _ in range(3):
            wid = f"race-can-{uuid.uuid4().hex[:8]}"
            handle = await client.start_workflow(CountAcrossContinueAsNew.run, 0, 0, id=wid, task_queue="q-race-can")
            accepted = await _signal_all(client, wid)
            result = await handle.result(timeout=30)
            first = await client.get_workflow_handle(wid, run_id=handle.run_id).describe()
            recorded = await _signaled_events(client, wid, handle.run_id) + await _signaled_events(
                client, wid, None)
            assert first["status"] == "ContinuedAsNew"
            assert recorded == accepted
            assert result == accepted, f"workflow code saw {result} of {accepted} accepted signals"
