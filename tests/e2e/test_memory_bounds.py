"""History's memory per run stays within its byte budgets under a signal flood, and the
workflow still sees every signal (its task reads the history from PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.history.memory import event_bytes

pytestmark = pytest.mark.timeout(120)

RUN_BYTES = 64 * 1024
SHARD_BYTES = 160 * 1024
SIGNALS = 30
PAYLOAD = 20_000


@workflow.defn
class TallyWorkflow:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    @workflow.run
    async def run(self, expected: int) -> list[int]:
        await workflow.wait_condition(lambda: len(self.sizes) >= expected)
        return [len(self.sizes), sum(self.sizes)]

    @workflow.signal
    def add(self, payload: str) -> None:
        self.sizes.append(len(payload))


@pytest.fixture
async def small_budgets(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000, history_tail_run_bytes=RUN_BYTES,
                        history_tail_shard_bytes=SHARD_BYTES)
    async with Cluster(settings) as c:
        yield c


async def test_a_signal_flood_stays_within_the_tail_budgets_and_every_signal_is_seen(small_budgets: Cluster) -> None:
    client = await Client.connect(small_budgets.url, namespace="default")
    try:
        queue = f"q-flood-{uuid.uuid4().hex[:6]}"
        handles = [await client.start_workflow(TallyWorkflow.run, SIGNALS, id=f"flood-{uuid.uuid4().hex[:6]}",
                                               task_queue=queue) for _ in range(3)]
        # Nobody polls: every signal stays in history's memory as long as the budgets let it.
        for n in range(SIGNALS):
            await asyncio.gather(*(h.signal(TallyWorkflow.add, chr(ord("a") + n % 26) * PAYLOAD) for h in handles))
            for shard in small_budgets.history.shards.values():
                assert shard.tails.total <= SHARD_BYTES
                for run_id in list(shard.cache.runs):
                    tail = shard.tails.get(run_id) or []
                    assert sum(event_bytes(data) for _, data, _ in tail) <= RUN_BYTES
        async with Worker(client, task_queue=queue, workflows=[TallyWorkflow]):
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
        assert results == [[SIGNALS, SIGNALS * PAYLOAD]] * 3
    finally:
        await client.close()
