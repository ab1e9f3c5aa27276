"""Timer run-ahead end to end (docs/decisions/0014): a workflow wakes from ``sleep`` on the
worker that holds it, which runs the task on the timer's firing and sends it; history
records TimerFired and that task together (its start carries the worker's ran_ahead_id).
A worker that stops before its timer leaves it to history, which fires it after the grace,
and another worker completes the run. The code never wakes before ``d`` of wall time since
its call, and the SDK's replayer accepts every such history. Runs whose timers come due at
one moment all wake on their worker together, each task taken by history (decision 0017)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from kadence import Client, Worker, workflow
from kadence.replay import Replayer
from services.cluster import Cluster
from tests.helpers import eventually


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster)."""
    return module_cluster


pytestmark = pytest.mark.timeout(120)
NAP_S = 0.5


@workflow.defn
class TwoNaps:
    """Reads the wall clock around each sleep (measurement only: the reads do not steer the commands)."""

    @workflow.run
    async def run(self, seconds: float) -> list[float]:
        walls = [time.time()]
        await workflow.sleep(seconds)
        walls.append(time.time())
        await workflow.sleep(seconds)
        walls.append(time.time())
        return walls


@workflow.defn
class NapWithLongTimer:
    """Two timers pending: the earlier wakes the code, which then cancels the later one."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        long = asyncio.ensure_future(workflow.sleep(600))
        await workflow.sleep(seconds)
        long.cancel()
        return "woke"


@workflow.defn
class NapThenSignals:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.run
    async def run(self, seconds: float) -> list[str]:
        await workflow.sleep(seconds)
        await workflow.wait_condition(lambda: bool(self.seen))
        return self.seen

    @workflow.signal
    def note(self, text: str) -> None:
        self.seen.append(text)


@workflow.defn
class NapUntil:
    """Sleeps until the wall-clock moment ``due`` (epoch seconds), counted from workflow.now()."""

    @workflow.run
    async def run(self, due: float) -> list[float]:
        before, now = time.time(), workflow.now().timestamp()
        await workflow.sleep(max(0.0, due - now))
        return [before, time.time(), due - now]


def _wake_tasks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The WorkflowTaskStarted of each task that follows a TimerFired."""
    out = []
    for i, event in enumerate(events):
        if event["event_type"] == "TimerFired":
            out.append(next(e for e in events[i:] if e["event_type"] == "WorkflowTaskStarted"))
    return out


def _ran_ahead_after_firing(events: list[dict[str, Any]]) -> bool:
    """TimerFired, then the task scheduled and started by the worker (ran_ahead_id) at once."""
    kinds = [e["event_type"] for e in events]
    return any(kinds[i:i + 3] == ["TimerFired", "WorkflowTaskScheduled", "WorkflowTaskStarted"]
               and events[i + 2]["attributes"].get("ran_ahead_id") for i in range(len(kinds)))


async def test_a_workflow_wakes_on_the_worker_that_holds_it_never_early(client: Client) -> None:
    queue = f"ahead-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[TwoNaps]):
        handles = await asyncio.gather(*(
            client.start_workflow(TwoNaps.run, NAP_S, id=f"naps-{i}-{uuid.uuid4().hex[:6]}", task_queue=queue)
            for i in range(5)))
        walls = await asyncio.gather(*(h.result() for h in handles))
    histories = [await h.history() for h in handles]
    for (before, middle, after), events in zip(walls, histories, strict=True):
        assert middle - before >= NAP_S and after - middle >= NAP_S  # never early by the wall clock
        wakes = _wake_tasks(events)
        assert len(wakes) == 2 and all(w["attributes"].get("ran_ahead_id") for w in wakes), events
        assert _ran_ahead_after_firing(events)
        fired = [e for e in events if e["event_type"] == "TimerFired"]
        started = [e for e in events if e["event_type"] == "TimerStarted"]
        for timer, firing, wake in zip(started, fired, wakes, strict=True):
            # The task's workflow.now() is no earlier than history's fire time.
            assert wake["attributes"]["started_time"] >= timer["attributes"]["start_time"] + NAP_S * 1000
            assert firing["event_time"] >= timer["attributes"]["start_time"] + NAP_S * 1000
    replayer = Replayer(workflows=[TwoNaps])
    for events in histories:
        replayer.replay(events)


async def test_runs_due_at_one_moment_all_wake_on_their_worker_never_early(client: Client) -> None:
    queue = f"moment-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[NapUntil]):
        # Far enough ahead that every run's first task is done before it, on a loaded machine
        # too: a run still starting at the moment is woken by history, not ahead.
        due = time.time() + 6.0
        handles = await asyncio.gather(*(
            client.start_workflow(NapUntil.run, due, id=f"moment-{i}-{uuid.uuid4().hex[:6]}", task_queue=queue)
            for i in range(60)))
        samples = await asyncio.gather(*(h.result() for h in handles))
    histories = await asyncio.gather(*(h.history() for h in handles))
    for (before, after, asked), events in zip(samples, histories, strict=True):
        assert after - before >= asked > 0  # never early by the wall clock, since the call
        [wake] = _wake_tasks(events)
        assert wake["attributes"].get("ran_ahead_id") and _ran_ahead_after_firing(events), events
    replayer = Replayer(workflows=[NapUntil])
    for events in histories:
        replayer.replay(events)


async def test_the_earlier_of_two_timers_wakes_the_run_and_the_code_cancels_the_other(client: Client) -> None:
    queue = f"two-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[NapWithLongTimer]):
        handle = await client.start_workflow(NapWithLongTimer.run, NAP_S, id=f"two-{uuid.uuid4().hex[:6]}",
                                             task_queue=queue)
        assert await handle.result() == "woke"
    events = await handle.history()
    kinds = [e["event_type"] for e in events]
    assert kinds.count("TimerStarted") == 2 and kinds.count("TimerFired") == 1 and "TimerCanceled" in kinds
    assert _ran_ahead_after_firing(events), kinds
    Replayer(workflows=[NapWithLongTimer]).replay(events)


async def test_a_signal_just_before_the_timer_is_seen_whichever_path_wakes_the_run(client: Client) -> None:
    queue = f"sig-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[NapThenSignals]):
        handles = []
        for i in range(3):
            handle = await client.start_workflow(NapThenSignals.run, NAP_S, id=f"sig-{i}-{uuid.uuid4().hex[:6]}",
                                                 task_queue=queue)
            await eventually(lambda h=handle: _has(h, "TimerStarted"), what="the timer started")
            await asyncio.sleep(NAP_S - 0.05 * (i + 1))  # just before the fire time
            await handle.signal(NapThenSignals.note, f"hello {i}")
            handles.append(handle)
        results = await asyncio.gather(*(h.result() for h in handles))
    assert results == [["hello 0"], ["hello 1"], ["hello 2"]]
    replayer = Replayer(workflows=[NapThenSignals])
    for handle in handles:
        replayer.replay(await handle.history())


async def _has(handle: Any, kind: str) -> bool:
    return any(e["event_type"] == kind for e in await handle.history())


async def test_a_worker_stopped_before_its_timer_leaves_it_to_history_after_the_grace(
        cluster: Cluster, client: Client) -> None:
    queue = f"stop-{uuid.uuid4().hex[:6]}"
    nap = 1.0
    async with Worker(client, task_queue=queue, workflows=[NapWithLongTimer]):
        handle = await client.start_workflow(NapWithLongTimer.run, nap, id=f"stop-{uuid.uuid4().hex[:6]}",
                                             task_queue=queue)
        await eventually(lambda: _has(handle, "TimerStarted"), what="the timers started")
    # The worker that held the run is gone; another one gets the task history hands out.
    async with Worker(client, task_queue=queue, workflows=[NapWithLongTimer]):
        assert await handle.result() == "woke"
    events = await handle.history()
    short = next(e for e in events if e["event_type"] == "TimerStarted"
                 and e["attributes"]["start_to_fire_timeout_ms"] == int(nap * 1000))
    fired = next(e for e in events if e["event_type"] == "TimerFired")
    grace = cluster.settings.timer_ahead_grace_ms
    assert grace > 0 and fired["event_time"] >= short["attributes"]["start_time"] + nap * 1000 + grace
    assert not _wake_tasks(events)[0]["attributes"].get("ran_ahead_id")  # handed out, not run ahead
    Replayer(workflows=[NapWithLongTimer]).replay(events)
