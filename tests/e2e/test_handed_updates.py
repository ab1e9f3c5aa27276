"""In one process, a workflow task history hands straight to a waiting poll carries the
update requests of its commit: the poll's answer gives them to the worker without reading
the run's summary (services/frontend/engine.py), and the update still runs."""

from __future__ import annotations

from typing import Any

import pytest

from kadence import Client
from services.cluster import Cluster
from services.common.matching.tasks import WORKFLOW
from services.frontend.reads import ReadStore
from services.matching.queues import QueueKey
from tests.helpers import eventually

from .test_updates import QUEUE, Sleeper, _has, _id, _worker

pytestmark = pytest.mark.timeout(120)


def _poll_waiting(cluster: Cluster) -> bool:
    q = cluster.matching._queues.get(QueueKey("default", QUEUE, WORKFLOW))
    return q is not None and q.has_pollers()


async def test_a_handed_workflow_task_brings_its_update_requests_without_a_read(
        cluster: Cluster, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[list[str]] = []
    original = ReadStore.update_requests_of

    async def counted(self: ReadStore, run_ids: Any) -> dict[str, list[dict[str, Any]]]:
        reads.append(list(run_ids))
        return await original(self, run_ids)

    monkeypatch.setattr(ReadStore, "update_requests_of", counted)
    wid = _id("handed-update")
    async with _worker(client):
        handle = await client.start_workflow(Sleeper.run, id=wid, task_queue=QUEUE)
        await eventually(lambda: _has(client, wid, "TimerStarted"), timeout=20, what="the timer")
        await eventually(lambda: _poll_waiting(cluster), what="the worker's poll waiting")
        reads.clear()
        # The update schedules a workflow task, handed to the waiting poll with the request.
        assert await handle.execute_update(Sleeper.poke) == 1
        assert reads == []
        assert await handle.result(timeout=30) == 1
