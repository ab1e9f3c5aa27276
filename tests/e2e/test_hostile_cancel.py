"""Cancellation of a run whose heartbeating activity's worker is killed (-9) mid-activity: the
run still closes Canceled, once, within the heartbeat timeout and the worker that takes over,
and the caller's result agrees with the history. The worker runs as its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from kadence import Client, Worker, activity, workflow
from kadence.common import ActivityCancellationType
from kadence.exceptions import WorkflowFailureError
from services.cluster import Cluster
from tests.helpers import eventually

from .test_command_notices import ROOT, end_processes

pytestmark = pytest.mark.timeout(90)


@activity.defn(name="beat")
async def beat(marker: str) -> str:
    """Heartbeats until canceled; ``marker`` is a file it creates once it has heartbeat."""
    while True:
        activity.heartbeat()
        Path(marker).touch()
        await asyncio.sleep(0.1)


@workflow.defn
class Beating:
    """Waits for its activity's cancellation to complete before closing (Temporal's
    WAIT_CANCELLATION_COMPLETED), then closes Canceled."""

    @workflow.run
    async def run(self, marker: str) -> str:
        return await workflow.execute_activity(beat, marker, start_to_close_timeout=timedelta(seconds=60),
                                               heartbeat_timeout=timedelta(seconds=1),
                                               cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)


async def _serve(url: str, queue: str) -> None:
    """The worker process's body."""
    async with await Client.connect(url, namespace="default") as client, \
            Worker(client, task_queue=queue, workflows=[Beating], activities=[beat]):
        await asyncio.Event().wait()


def _worker_process(url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    code = f"import asyncio; from tests.e2e.test_hostile_cancel import _serve; asyncio.run(_serve({url!r}, {queue!r}))"
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)


async def test_cancel_of_a_run_whose_heartbeating_activitys_worker_was_killed(
        cluster: Cluster, client: Client, tmp_path: Path) -> None:
    wid, queue = f"beating-{uuid.uuid4().hex[:8]}", f"q-beating-{uuid.uuid4().hex[:6]}"
    procs = [_worker_process(cluster.url, queue, tmp_path / "worker.log")]
    try:
        marker = tmp_path / "heartbeating"
        handle = await client.start_workflow(Beating.run, str(marker), id=wid, task_queue=queue)
        await eventually(marker.exists, timeout=30, what="the activity heartbeating")
        procs[0].kill()
        procs[0].wait(timeout=10)
        await handle.cancel()
        async with Worker(client, task_queue=queue, workflows=[Beating], activities=[beat]):
            with pytest.raises(WorkflowFailureError) as closed:
                await handle.result(timeout=30)
        assert closed.value.status == "Canceled"
        kinds = [e["event_type"] for e in await handle.history()]
        assert kinds[-1] == "WorkflowExecutionCanceled", kinds
        closes = [k for k in kinds if k.startswith("WorkflowExecution") and k.endswith(
            ("Completed", "Failed", "Canceled", "Terminated", "TimedOut"))]
        assert closes == ["WorkflowExecutionCanceled"], kinds
        assert kinds.count("ActivityTaskCancelRequested") == 1, kinds
        assert sum(k in ("ActivityTaskCanceled", "ActivityTaskTimedOut", "ActivityTaskFailed",
                         "ActivityTaskCompleted") for k in kinds) == 1, kinds
    finally:
        end_processes(procs)
