"""A signal sent before an update is seen by the update's handler, also when both reach the
run while its first workflow task still waits for a worker (Temporal's order: the worker
gets every event recorded before the task starts, then the updates)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kadence import Client, Worker
from services.cluster import Cluster
from tests.helpers import eventually

from .test_interceptors import Intercepted, delete_everything, shout

pytestmark = pytest.mark.timeout(60)


async def test_an_update_sent_after_a_signal_sees_it_when_the_worker_comes_late(cluster: Cluster) -> None:
    queue = f"late-{uuid.uuid4().hex[:6]}"
    async with await Client.connect(cluster.url) as client:
        handle = await client.start_workflow(Intercepted.run, id=f"w-{uuid.uuid4().hex[:8]}", task_queue=queue)
        await handle.signal(Intercepted.word, "hello")
        update = asyncio.ensure_future(handle.execute_update(Intercepted.add, "world"))

        async def recorded() -> bool:
            assert cluster.pool is not None
            summary = await cluster.pool.fetchval("SELECT summary FROM executions WHERE run_id = $1", handle.run_id)
            return summary is not None and b'"update_id"' in (summary if isinstance(summary, bytes) else summary.encode())

        await eventually(recorded, what="the update request recorded before any worker polls")
        async with Worker(client, task_queue=queue, workflows=[Intercepted], activities=[shout, delete_everything]):
            assert await asyncio.wait_for(update, timeout=30) == 2
            assert await handle.result(timeout=30) == "HELLO WORLD (not refused)"  # the signal's word first
