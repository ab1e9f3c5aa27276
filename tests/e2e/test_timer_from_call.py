"""Timers count from the workflow code's call (decision 0013) end to end: TimerStarted
records the start history used (the SDK's requested time, clamped between the task's
schedule and the record), the firing follows from it, ``sleep(d)`` never wakes before ``d``
of wall time since the call, and the audit and the SDK's replay accept the new field."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from kadence import Client, Worker, workflow
from kadence.replay import Replayer
from services.cluster import Cluster
from services.history.audit import audit

from .test_audit import _published

pytestmark = pytest.mark.timeout(90)
SLEEP_S = 0.5
N = 20


@workflow.defn
class CallClockSleeper:
    """Reads the wall clock right before sleep and right after waking (measurement only)."""

    @workflow.run
    async def run(self, seconds: float) -> list[float]:
        before = time.time()
        await workflow.sleep(seconds)
        return [before, time.time()]


async def test_a_timer_counts_from_the_call_and_the_history_says_so(cluster: Cluster, client: Client) -> None:
    queue = f"call-{uuid.uuid4().hex[:6]}"
    # One task at a time: tasks queue, so a call comes well after its task was scheduled and
    # (under the burst) before history records its answer.
    async with Worker(client, task_queue=queue, workflows=[CallClockSleeper], max_concurrent_workflow_tasks=1,
                      max_tasks_per_poll=1):
        handles = await asyncio.gather(*(
            client.start_workflow(CallClockSleeper.run, SLEEP_S, id=f"call-{i}-{uuid.uuid4().hex[:6]}",
                                  task_queue=queue) for i in range(N)))
        walls = await asyncio.gather(*(h.result() for h in handles))
    histories = [await h.history() for h in handles]
    for (before, after), events in zip(walls, histories, strict=True):
        assert after - before >= SLEEP_S  # never early by the wall clock since the call
        by_type = {e["event_type"]: e for e in events}
        started, fired = by_type["TimerStarted"], by_type["TimerFired"]
        start = started["attributes"]["start_time"]
        assert start is not None, started
        first_task = next(e for e in events if e["event_type"] == "WorkflowTaskScheduled")
        # Within the clamp, and the call's time itself on this one clock (ms, truncated).
        assert first_task["event_time"] <= start <= started["event_time"]
        assert int(before * 1000) <= start
        assert fired["event_time"] >= start + int(SLEEP_S * 1000)
    await _published(cluster)
    report = await audit(cluster.settings.kafka_bootstrap, cluster.settings.database_url)
    assert report.clean, [str(d) for d in report.divergences]
    assert report.runs == N
    replayer = Replayer(workflows=[CallClockSleeper])
    for events in histories:
        replayer.replay(events)
