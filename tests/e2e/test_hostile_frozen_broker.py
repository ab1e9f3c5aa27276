"""The broker frozen (SIGSTOP) for longer than every timeout around it, during a burst of
starts and activity answers, then continued (SIGCONT).

What a caller sees meanwhile: each start is answered within the frontend's answer bound,
200 or 503 with Retry-After, never held for the whole freeze. Afterwards every start a
caller sent (again, with its request id, after a 503) has one run, each run completes once,
the activity answers given during the freeze are applied once, no loop has died (/health
200, no fatal), and the time from the thaw to the last result is measured.
KADENCE_TEST_BROKER_FREEZE_S sets the freeze (18 s; 25 and 40 s pass too, the brief's longest).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from kadence import Client, Worker, activity, workflow
from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from services.frontend.engine import ANSWER_BOUND
from tests.helpers import elapse, eventually

FREEZE_S = float(os.environ.get("KADENCE_TEST_BROKER_FREEZE_S", "18"))  # past the 15 s produce and reply bounds
pytestmark = pytest.mark.timeout(FREEZE_S + 180)
QUEUE = "q-frozen-broker"
BEFORE = 20  # started before the freeze: their activities answer during it
DURING = 20  # started during the freeze
ANSWERED_WITHIN_S = ANSWER_BOUND + 10  # the bound, and a slow shared machine
RUNS: Counter[str] = Counter()
ACCEPTED = (200, 201)


@activity.defn(name="quick_step")
async def quick_step(value: str) -> str:
    RUNS[value] += 1
    return value + "!"


@workflow.defn(name="Stepped")
class Stepped:
    @workflow.run
    async def run(self, value: str) -> str:
        first: str = await workflow.execute_activity(quick_step, value, start_to_close_timeout=timedelta(seconds=120))
        await workflow.sleep(1)
        second: str = await workflow.execute_activity(quick_step, first, start_to_close_timeout=timedelta(seconds=120))
        return second


async def _start(http: aiohttp.ClientSession, url: str, wid: str) -> tuple[int, float, str | None]:
    """One start, as a caller without retries sends it: (status, seconds taken, Retry-After)."""
    began = time.monotonic()
    body = {"workflow_id": wid, "workflow_type": "Stepped", "task_queue": QUEUE, "input": [wid],
            "request_id": f"req-{wid}"}
    try:
        async with http.post(f"{url}/api/v1/namespaces/default/workflows", json=body,
                             timeout=aiohttp.ClientTimeout(total=ANSWERED_WITHIN_S + 30)) as r:
            await r.read()
            return r.status, time.monotonic() - began, r.headers.get("Retry-After")
    except TimeoutError:
        return 0, time.monotonic() - began, None


async def test_a_frozen_broker_gets_bounded_answers_and_everything_completes_once(
        cluster: Cluster, client: Client, broker: EmbeddedBroker) -> None:
    pid = broker.process.pid  # the broker this test started
    tag = uuid.uuid4().hex[:6]
    before = [f"fb-{tag}-a{i}" for i in range(BEFORE)]
    during = [f"fb-{tag}-b{i}" for i in range(DURING)]
    frozen = False
    answers: list[tuple[str, int, float, str | None]] = []
    try:
        async with Worker(client, task_queue=QUEUE, workflows=[Stepped], activities=[quick_step]), \
                aiohttp.ClientSession() as http:
            for wid in before:
                status, _, _ = await _start(http, cluster.url, wid)
                assert status in ACCEPTED, status
            await eventually(lambda: all(RUNS[w] for w in before), timeout=60, what="first activities run")
            os.kill(pid, signal.SIGSTOP)
            frozen = True
            frozen_at = time.monotonic()

            async def start_during(wid: str) -> None:
                status, took, retry_after = await _start(http, cluster.url, wid)
                answers.append((wid, status, took, retry_after))
            starts = asyncio.gather(*(start_during(w) for w in during))
            await elapse(FREEZE_S)  # the freeze itself
            os.kill(pid, signal.SIGCONT)
            frozen = False
            thawed_at = time.monotonic()
            await starts
            # Each caller told to come back comes back with the same request id.
            for wid, status, _, _ in answers:
                if status not in ACCEPTED:
                    async def accepted(w: str = wid) -> bool:
                        return (await _start(http, cluster.url, w))[0] in ACCEPTED
                    await eventually(accepted, timeout=90, every=1, what=f"the start of {wid} accepted after the thaw")
            results = await asyncio.wait_for(asyncio.gather(*(client.get_workflow_handle(w).result()
                                                              for w in before + during)), timeout=120)
            recovered_s = time.monotonic() - thawed_at
            health = await _health(http, cluster.url)
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
    statuses = Counter(status for _, status, _, _ in answers)
    slowest = max(took for _, _, took, _ in answers)
    print(f"frozen broker {FREEZE_S} s: start answers {dict(statuses)}, slowest {slowest:.1f} s;"
          f" every result {recovered_s:.1f} s after the thaw ({thawed_at - frozen_at:.1f} s frozen)")
    assert results == [w + "!!" for w in before + during]
    assert all(status in (*ACCEPTED, 503) for _, status, _, _ in answers), answers
    assert all(took <= ANSWERED_WITHIN_S for _, _, took, _ in answers), answers
    assert all(retry_after for _, status, _, retry_after in answers if status == 503), answers
    assert health == 200
    assert cluster.fatal.reason is None
    assert all(s.failure is None for s in cluster.history.shards.values())
    for wid in before + during:
        history = await client.get_workflow_handle(wid).history()
        kinds = Counter(e["event_type"] for e in history)
        assert kinds["WorkflowExecutionStarted"] == 1 and kinds["ActivityTaskCompleted"] == 2, (wid, kinds)
        assert kinds["WorkflowExecutionCompleted"] == 1, (wid, kinds)


async def _health(http: aiohttp.ClientSession, url: str) -> int:
    async def ok() -> int:
        async with http.get(url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status if r.status == 200 else 0
    status: Any = await eventually(ok, timeout=30, what="/health 200 after the thaw")
    return int(status)
