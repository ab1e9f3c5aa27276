"""The workload of the chaos tests: workflows that are mid-way when a fault strikes.

Each workflow runs an activity, sleeps on a timer that comes due during the fault, waits
for a signal sent during the fault, and runs a second activity. ``run_through`` starts
them, applies the fault, and waits until every one has completed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from kadence import Client, Worker, activity, workflow
from services.cluster import Cluster
from tests.chaos.conftest import HealthWatch
from tests.helpers import elapse, eventually

# The issue ran 2,000 workflows through a 5 s outage; 200 finish in well under a minute on
# a small shared machine. Raise it on a bigger one (KADENCE_CHAOS_WORKFLOWS=2000).
WORKFLOWS = int(os.environ.get("KADENCE_CHAOS_WORKFLOWS", "200"))
FAULT_S = 5.0
TASK_QUEUE = "chaos"
DEADLINE_S = 180.0 + WORKFLOWS / 20  # for every call to succeed, all faults included


@activity.defn
async def step(value: str) -> str:
    return value + "."


@workflow.defn
class FaultWorkflow:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, value: str) -> str:
        value = await workflow.execute_activity(step, value, start_to_close_timeout=timedelta(seconds=60))
        await workflow.sleep(FAULT_S / 2)
        await workflow.wait_condition(lambda: self.go)
        return await workflow.execute_activity(step, value, start_to_close_timeout=timedelta(seconds=60))

    @workflow.signal
    def proceed(self) -> None:
        self.go = True


async def _retrying(what: str, call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """Run the call until it succeeds: during the fault it may answer 503 or time out."""
    async def attempt() -> tuple[Any]:
        try:
            return (await call(),)  # a tuple: truthy whatever the call answers
        except Exception as exc:  # any failure during the fault: try again, up to the deadline
            raise AssertionError(repr(exc)) from exc
    answered = await eventually(attempt, timeout=max(0.0, deadline - time.monotonic()), every=0.5,
                                what=f"{what} succeeding")
    return answered[0]


async def run_through(cluster: Cluster, fault: Callable[[], None], repair: Callable[[], None], *,
                      prefix: str, lasting: float = FAULT_S) -> HealthWatch:
    """Start WORKFLOWS workflows, ``fault()``, send their signals, ``repair()`` after ``lasting``
    seconds, and wait for every result; the /health statuses seen meanwhile are returned."""
    deadline = time.monotonic() + DEADLINE_S
    async with await Client.connect(cluster.url, namespace="default") as client, \
            Worker(client, task_queue=TASK_QUEUE, workflows=[FaultWorkflow], activities=[step]), \
            HealthWatch(cluster.url) as health:
        ids = [f"{prefix}-{i}" for i in range(WORKFLOWS)]
        gate = asyncio.Semaphore(50)

        async def start(wid: str) -> None:
            async with gate:
                await client.start_workflow(FaultWorkflow.run, wid, id=wid, task_queue=TASK_QUEUE, request_id=wid)

        await asyncio.gather(*(start(w) for w in ids))
        await eventually(lambda: health.statuses and health.statuses[-1] == 200, what="healthy before the fault")

        # The fault strikes with the workflows in their first activity or timer.
        await asyncio.to_thread(fault)
        struck = time.monotonic()

        async def signal(wid: str) -> None:
            async with gate:
                handle = client.get_workflow_handle(wid)
                await _retrying(f"signal to {wid}", lambda: handle.signal(FaultWorkflow.proceed), deadline)

        signals = asyncio.gather(*(signal(w) for w in ids))
        try:
            await elapse(max(0.0, lasting - (time.monotonic() - struck)))  # the fault lasts that long
        finally:
            await asyncio.to_thread(repair)
        await signals

        async def result(wid: str) -> tuple[str, Any]:
            handle = client.get_workflow_handle(wid)
            return wid, await _retrying(f"the result of {wid}", lambda: handle.result(timeout=60), deadline)

        results = dict(await asyncio.gather(*(result(w) for w in ids)))
        assert results == {w: w + ".." for w in ids}
        await eventually(lambda: health.statuses[-1] == 200, timeout=15, what="/health back to 200")
        return health
