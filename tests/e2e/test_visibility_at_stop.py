"""Runs that close just before a one-process cluster (``kadence dev``) stops are listable
after it: the stop lets visibility project what history published before it ends, since
the development broker keeps nothing across a restart to fetch those records from again.
(What history had not published yet stays in its outbox, for the next start to publish.)"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from kadence import Client, Worker
from services.cluster import VISIBILITY_DRAIN_S, Cluster
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

from .conftest import _settings
from .test_visibility import VisOrder

pytestmark = pytest.mark.timeout(120)


async def test_runs_closed_just_before_the_stop_are_in_visibility(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = [f"stop-{tag}-{i}" for i in range(3)]
    cluster = Cluster(_settings(broker, fresh_dsn))
    await cluster.start()
    conn = await asyncpg.connect(fresh_dsn)
    try:
        try:
            client = await Client.connect(cluster.url)
            try:
                async with Worker(client, task_queue=f"stop-{tag}", workflows=[VisOrder]):
                    for workflow_id in ids:
                        await client.execute_workflow(VisOrder.run, 1, id=workflow_id, task_queue=f"stop-{tag}")
            finally:
                await client.close()

            async def published() -> bool:
                return await conn.fetchval("SELECT count(*) FROM outbox_batches") == 0

            await eventually(published, timeout=30, every=0.01, what="history published every record")
        finally:
            # At once, as `kadence dev --sample` does after its result.
            await cluster.stop(drain_visibility_s=VISIBILITY_DRAIN_S)
        rows = await conn.fetch("SELECT workflow_id, status FROM visibility WHERE workflow_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    assert {r["workflow_id"]: r["status"] for r in rows} == dict.fromkeys(ids, "Completed")
