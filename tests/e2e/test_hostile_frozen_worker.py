"""A worker frozen (SIGSTOP) mid-activity past its heartbeat timeout, then continued.

The attempt it held times out and is retried on another worker. When the frozen one wakes
and completes its attempt, that late completion is refused: the workflow's result is the
retried attempt's, history holds one completion, and nothing of the late one is applied.
The worker runs as a process of its own (tests/chaos/frozen_worker.py), stopped by its PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from kadence import Client, RetryPolicy, Worker, activity, workflow
from services.cluster import Cluster
from tests.helpers import eventually, stays

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_TIMEOUT_S = 2.0
RELEASE = asyncio.Event()
SECOND_ATTEMPTS: list[int] = []


@activity.defn(name="slow_step")
async def second_worker_step(value: str) -> str:
    """The same activity on a second worker, held until the frozen worker has answered."""
    attempt = activity.info().attempt
    SECOND_ATTEMPTS.append(attempt)
    while not RELEASE.is_set():
        activity.heartbeat(attempt)
        await asyncio.sleep(0.1)
    return f"{value}@{attempt}:second-worker"


@workflow.defn
class OneSlowStep:
    @workflow.run
    async def run(self, value: str) -> str:
        result: str = await workflow.execute_activity(
            "slow_step", value, start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT_S),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5))
        return result


async def test_a_frozen_workers_late_completion_is_refused(cluster: Cluster, client: Client, tmp_path: Path) -> None:
    queue = f"q-frozen-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "frozen-worker.log"
    with open(log, "ab") as out:
        frozen = subprocess.Popen([sys.executable, "-m", "tests.chaos.frozen_worker", cluster.url, queue,
                                   str(tmp_path)], cwd=ROOT, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    stopped = False
    try:
        await eventually(lambda: (tmp_path / "ready").exists(), timeout=30, what="the frozen worker polling")
        async with Worker(client, task_queue=queue, workflows=[OneSlowStep]):
            handle = await client.start_workflow(OneSlowStep.run, "v", id=f"frozen-{uuid.uuid4().hex[:8]}",
                                                 task_queue=queue)
            await eventually(lambda: (tmp_path / "started-1").exists(), timeout=30,
                             what="attempt 1 running on the worker about to freeze")
            os.kill(frozen.pid, signal.SIGSTOP)
            stopped = True
            frozen_at = time.monotonic()
            # The second worker takes the retried attempt once the first one's heartbeats stop.
            async with Worker(client, task_queue=queue, activities=[second_worker_step]):
                await eventually(lambda: SECOND_ATTEMPTS, timeout=30, what="a retried attempt on the second worker")
                retried_after = time.monotonic() - frozen_at
                assert retried_after < HEARTBEAT_TIMEOUT_S + 10, retried_after
                # The frozen worker wakes with its attempt done: its completion comes late.
                (tmp_path / "go").write_text("")
                os.kill(frozen.pid, signal.SIGCONT)
                stopped = False
                await eventually(lambda: "attempt 1 returns" in log.read_text(), timeout=30,
                                 what="the frozen worker completing its attempt")
                # The late completion (sent at once) must not close the run meanwhile.
                async def running() -> bool:
                    return bool((await handle.describe())["status"] == "Running")
                await stays(running, for_seconds=5, every=0.2, what="the run waiting for the retried attempt")
                RELEASE.set()
                result = await asyncio.wait_for(handle.result(), timeout=30)
            history = await handle.history()
    finally:
        if stopped:
            os.kill(frozen.pid, signal.SIGCONT)
        frozen.terminate()
        try:
            frozen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            frozen.kill()
            frozen.wait(timeout=5)
    print(f"retried attempt {SECOND_ATTEMPTS[-1]} on the second worker {retried_after:.1f} s after the freeze")
    assert result == f"v@{SECOND_ATTEMPTS[-1]}:second-worker", (result, log.read_text())
    kinds = [e["event_type"] for e in history]
    assert kinds.count("ActivityTaskCompleted") == 1 and kinds.count("WorkflowExecutionCompleted") == 1, kinds
