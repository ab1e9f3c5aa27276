"""Timer run-ahead under faults (docs/decisions/0014): signals sent about the fire times,
timers the code cancels as they come due, continue-as-new with a timer pending, two workers
of one queue (one stopped mid-way, so the sticky cache moves), a worker killed (SIGKILL)
between its wake and history's answer, a worker whose clock is 5 s ahead. No timer
fires twice or both fires and is cancelled, none wakes the code before its duration of wall
time since the call, no run waits past the grace, and every history replays."""

from __future__ import annotations

import asyncio
import functools
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from kadence import Client, Worker, workflow
from kadence.replay import Replayer
from services.cluster import Cluster
from tests.processes import stop_group

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each uses
    its own workflow ids and task queue, and none stops, breaks or patches a service."""
    return module_cluster
EARLY: list[str] = []
WAIT_S = 0.4
NAP_S = 0.3


CALLS: dict[tuple[str, str], float] = {}


def _called(what: str) -> None:
    """The wall time of the code's call, as first seen live (a replay re-runs it at once)."""
    if not workflow.is_replaying():
        CALLS.setdefault((workflow.info().run_id, what), time.time())


def _woke(what: str, seconds: float) -> None:
    call = CALLS.get((workflow.info().run_id, what))
    if not workflow.is_replaying() and call is not None and time.time() - call < seconds:
        EARLY.append(f"{workflow.info().workflow_id} {what} after {time.time() - call:.3f} s")


@workflow.defn
class Mixed:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @workflow.signal
    def poke(self, value: str) -> None:
        self.seen.append(value)

    def _seen_more_than(self, count: int) -> bool:
        return len(self.seen) > count

    @workflow.run
    async def run(self, hops: int) -> int:
        for i in range(3):
            _called(f"wait {i}")
            try:
                await workflow.wait_condition(functools.partial(self._seen_more_than, i), timeout=WAIT_S)
            except TimeoutError:
                _woke(f"wait {i}", WAIT_S)
            _called(f"nap {i}")
            await workflow.sleep(NAP_S)
            _woke(f"nap {i}", NAP_S)
        if hops:
            pending = asyncio.ensure_future(workflow.sleep(0.2))  # pending when the run continues as new
            workflow.continue_as_new(hops - 1)
            del pending
        return len(self.seen)


def _check_history(events: list[dict[str, Any]]) -> None:
    started = {e["event_id"]: e for e in events if e["event_type"] == "TimerStarted"}
    fired = Counter(e["attributes"]["started_event_id"] for e in events if e["event_type"] == "TimerFired")
    canceled = Counter(e["attributes"]["started_event_id"] for e in events if e["event_type"] == "TimerCanceled")
    assert all(n == 1 for n in fired.values()), fired
    assert not set(fired) & set(canceled), (fired, canceled)
    for i, e in enumerate(events):
        if e["event_type"] != "TimerFired":
            continue
        st = started[e["attributes"]["started_event_id"]]["attributes"]
        due = st["start_time"] + st["start_to_fire_timeout_ms"]
        assert e["event_time"] >= due, (e, st)
        # The task that brings the firing: the first scheduled after it (events between a
        # task's scheduling and its start belong to the next task).
        wake = next((w for w in events[i:] if w["event_type"] == "WorkflowTaskStarted"
                     and w["attributes"]["scheduled_event_id"] > e["event_id"]), None)
        if wake is not None:
            assert wake["attributes"]["started_time"] >= due, "\n".join(
                f'{x["event_id"]} {x["event_type"]} t={x["event_time"]} {x["attributes"]}' for x in events)


async def _chain(client: Client, wid: str) -> list[list[dict[str, Any]]]:
    """Every run's history, first to last."""
    handle = client.get_workflow_handle(wid)
    runs = []
    run_id: str | None = (await handle.describe())["run_id"]
    events = await client.get_workflow_handle(wid, run_id=run_id).history()
    runs.append(events)
    while True:
        first = events[0]["attributes"]
        prev = first.get("continued_execution_run_id")
        if not prev:
            break
        events = await client.get_workflow_handle(wid, run_id=prev).history()
        runs.append(events)
    return runs[::-1]


async def test_timers_under_signals_cancels_continue_as_new_and_two_workers(client: Client) -> None:
    queue = f"hostile-ahead-{uuid.uuid4().hex[:6]}"
    rnd = random.Random(7)
    n = 12
    hops = 2
    EARLY.clear()
    second = Worker(client, task_queue=queue, workflows=[Mixed])
    async with Worker(client, task_queue=queue, workflows=[Mixed]):
        await second.__aenter__()
        try:
            handles = await asyncio.gather(*(client.start_workflow(Mixed.run, hops, id=f"mixed-{i}-{uuid.uuid4().hex[:6]}",
                                                                   task_queue=queue) for i in range(n)))

            async def poke(h: Any) -> None:
                for k in range(6):
                    # Near a fire time: the waits are 0.4 s and the naps 0.3 s.
                    await asyncio.sleep(rnd.choice([0.28, 0.3, 0.31, 0.39, 0.4, 0.41, 0.7]))
                    try:
                        await h.signal("poke", f"p{k}")
                    except Exception:  # noqa: BLE001 - the run may be between runs or closed
                        pass

            pokes = [asyncio.ensure_future(poke(h)) for h in handles]
            await asyncio.sleep(1.5)
        finally:
            await second.__aexit__(None, None, None)  # the sticky cache moves to the first
        await asyncio.gather(*pokes)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 90)
    assert all(isinstance(r, int) for r in results)
    assert EARLY == [], EARLY
    replayer = Replayer(workflows=[Mixed])
    for h in handles:
        for events in await _chain(client, h.id):
            _check_history(events)
            replayer.replay(events)


@workflow.defn
class OneNap:
    @workflow.run
    async def run(self, seconds: float) -> str:
        _called("nap")
        await workflow.sleep(seconds)
        _woke("nap", seconds)
        return "woke"


# A worker in a process of its own that kills itself (SIGKILL) as it sends its first task run
# ahead on a timer: it woke the run and ran the task, and history never hears of it.
_DYING_WORKER = """
import asyncio, os, signal, sys
from kadence import Client, Worker
from kadence._http import HttpTransport
from tests.e2e.test_hostile_timer_ahead import OneNap

real = HttpTransport.call

async def call(self, method, path, **kw):
    if path.endswith("/workflow-tasks/timer-ahead"):
        print("dying", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return await real(self, method, path, **kw)

HttpTransport.call = call

async def main():
    client = await Client.connect(sys.argv[1])
    async with Worker(client, task_queue=sys.argv[2], workflows=[OneNap]):
        print("ready", flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_worker_killed_between_its_wake_and_historys_answer(cluster: Cluster, client: Client) -> None:
    queue = f"dying-{uuid.uuid4().hex[:6]}"
    nap = 1.0
    process = subprocess.Popen([sys.executable, "-c", _DYING_WORKER, cluster.url, queue], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        handle = await client.start_workflow(OneNap.run, nap, id=f"dying-{uuid.uuid4().hex[:6]}", task_queue=queue)
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
        assert line.strip() == "dying"
        assert await asyncio.wait_for(asyncio.to_thread(process.wait), 10) == -9
    finally:
        stop_group(process)
        if process.stdout is not None:
            process.stdout.close()
    async with Worker(client, task_queue=queue, workflows=[OneNap]):
        assert await asyncio.wait_for(handle.result(), 30) == "woke"
    events = await handle.history()
    _check_history(events)
    kinds = [e["event_type"] for e in events]
    assert kinds.count("TimerFired") == 1 and kinds.count("WorkflowExecutionCompleted") == 1, kinds
    started = next(e for e in events if e["event_type"] == "TimerStarted")["attributes"]
    fired = next(e for e in events if e["event_type"] == "TimerFired")
    grace = cluster.settings.timer_ahead_grace_ms
    # Held for the grace (its worker said it runs timers ahead), then fired by history: not
    # stuck past it (a second of slack for the shard's timer queue on a busy machine).
    assert fired["event_time"] <= started["start_time"] + nap * 1000 + grace + 1000, (fired, started)
    Replayer(workflows=[OneNap]).replay(events)


@workflow.defn
class TwoNaps:
    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(seconds)
        await workflow.sleep(seconds)
        return "woke twice"


# A worker in a process of its own whose wall clock is off by argv[3] seconds.
_SKEWED_WORKER = """
import asyncio, sys, time
skew = float(sys.argv[3])
real_time = time.time
time.time = lambda: real_time() + skew
from kadence import Client, Worker
from tests.e2e.test_hostile_timer_ahead import TwoNaps

async def main():
    client = await Client.connect(sys.argv[1])
    async with Worker(client, task_queue=sys.argv[2], workflows=[TwoNaps]):
        print("ready", flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


# A clock behind (-5 s) was run too: each timer then waits out the grace, as decision 0014
# says; left out of the suite for its 10 s.
@pytest.mark.parametrize("skew", [5.0])
async def test_a_worker_whose_clock_is_off(cluster: Cluster, client: Client, skew: float) -> None:
    queue = f"skew-{uuid.uuid4().hex[:6]}"
    nap = 1.0
    process = subprocess.Popen([sys.executable, "-c", _SKEWED_WORKER, cluster.url, queue, str(skew)],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        handle = await client.start_workflow(TwoNaps.run, nap, id=f"skew-{uuid.uuid4().hex[:6]}", task_queue=queue)
        began = time.time()
        assert await asyncio.wait_for(handle.result(), 40) == "woke twice"
        took = time.time() - began
    finally:
        stop_group(process)
        if process.stdout is not None:
            process.stdout.close()
    events = await handle.history()
    kinds = [e["event_type"] for e in events]
    assert "WorkflowTaskFailed" not in kinds and kinds.count("TimerFired") == 2, kinds
    grace = cluster.settings.timer_ahead_grace_ms / 1000
    assert took < 2 * (nap + grace) + 3, took  # at worst each timer waits out the grace
    for e in events:
        if e["event_type"] == "TimerFired":
            st = next(x for x in events if x["event_id"] == e["attributes"]["started_event_id"])["attributes"]
            # History's own clock: never before the fire time by more than the lead it accepts.
            assert e["event_time"] >= st["start_time"] + st["start_to_fire_timeout_ms"] - 1000, (e, st)
    Replayer(workflows=[TwoNaps]).replay(events)
