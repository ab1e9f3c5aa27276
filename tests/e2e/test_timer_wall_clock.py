"""The timer rule end to end: ``sleep(d)`` never wakes before ``d`` of wall time has passed
since the workflow code called it, even when its task queued long before the code ran."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from kadence import Client, Worker, workflow

pytestmark = pytest.mark.timeout(90)
SLEEP_S = 1.0


@workflow.defn
class WallClockSleeper:
    """Reads the wall clock right before sleep and right after waking (measurement only: the
    reads do not steer the commands, and a cached worker runs each task once)."""

    @workflow.run
    async def run(self, seconds: float) -> list[float]:
        before = time.time()
        await workflow.sleep(seconds)
        return [before, time.time()]


async def test_no_timer_wakes_early_by_the_wall_clock(client: Client) -> None:
    queue = f"wall-{uuid.uuid4().hex[:6]}"
    # One workflow task at a time: the 100 first tasks queue, so most run well after their
    # scheduled time (the workflow's now()), which is what woke timers early before.
    async with Worker(client, task_queue=queue, workflows=[WallClockSleeper], max_concurrent_workflow_tasks=1,
                      max_tasks_per_poll=1):
        handles = await asyncio.gather(*(
            client.start_workflow(WallClockSleeper.run, SLEEP_S, id=f"sleep-{i}-{uuid.uuid4().hex[:6]}",
                                  task_queue=queue) for i in range(100)))
        walls = await asyncio.gather(*(h.result() for h in handles))
    lateness_ms = [(after - before - SLEEP_S) * 1000 for before, after in walls]
    assert min(lateness_ms) >= 0, sorted(lateness_ms)[:5]
    assert time.time() >= max(after for _, after in walls)
