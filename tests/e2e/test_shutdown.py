"""Stopping Kadence while workers poll and clients wait for results."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from kadence import Client, Worker
from services.cluster import Cluster
from services.common.matching import ACTIVITY
from services.matching.queues import QueueKey
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(60)

NS = "/api/v1/namespaces/default"


async def test_stopping_answers_polls_and_result_waits_instead_of_waiting_them_out(cluster: Cluster,
                                                                                   client: Client) -> None:
    # A run nobody works on, so that a wait for its result lasts.
    handle = await client.start_workflow("NobodyRunsThis", id="wf-stop", task_queue="q-nobody")
    async with aiohttp.ClientSession() as http:
        async def call(method: str, path: str, **kw: object) -> tuple[int, dict[str, object]]:
            async with http.request(method, cluster.url + NS + path, **kw) as resp:  # type: ignore[arg-type]
                return resp.status, await resp.json()

        poll = asyncio.ensure_future(call("POST", "/task-queues/q-idle/activity-tasks/poll",
                                          json={"wait_seconds": 30}))
        result = asyncio.ensure_future(call("GET", "/workflows/wf-stop/result",
                                            params={"run_id": str(handle.run_id), "wait_seconds": "30"}))
        def both_waiting() -> bool:  # the poll parked in matching, the result wait in the frontend
            queue = cluster.matching._queues.get(QueueKey("default", "q-idle", ACTIVITY))
            closes = cluster.frontend._closes
            return (queue is not None and queue.has_pollers()
                    and closes is not None and str(handle.run_id) in closes._waiters)
        await eventually(both_waiting, what="the poll and the result wait both waiting")
        assert not poll.done() and not result.done()
        started = time.monotonic()
        await cluster.stop()
        # The shutdown answered them as their waits would have ended, rather than waiting 30 s.
        assert time.monotonic() - started < 10
        assert await poll == (200, {"tasks": []})
        assert await result == (200, {"status": "Running"})


async def test_a_frontend_stopped_and_started_again_in_its_cluster_gets_tasks_to_its_workers(
        cluster: Cluster) -> None:
    """Its stop released the polls of the matching client the cluster shares with it for good:
    every poll through the restarted frontend answered empty at once, and no run went on."""
    await cluster.frontend.stop()
    await cluster.frontend.start()
    async with await Client.connect(cluster.url) as client, \
            Worker(client, task_queue="q-restarted", workflows=[EchoWorkflow], activities=[echo]):
        result = client.execute_workflow(EchoWorkflow.run, "again", id="wf-restarted", task_queue="q-restarted")
        assert await asyncio.wait_for(result, 30) == "again"
