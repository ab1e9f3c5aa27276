"""PostgreSQL goes away while history is taking its shards, between taking a shard over and
reading where to resume it.

The partition was assigned to the consumer but its shard never started: the rebalance
listener failed ("User provided listener ... failed on partition assignment"), nothing
retried, and the process answered /health without that shard while the workflows on it
waited for ever. Now the whole acquisition is retried through the outage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from kadence import Client, Worker, activity, workflow
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
from services.history.health import ShardState
from services.history.store import HistoryStore
from tests.chaos.conftest import CHAOS_SHARDS, STALL_AFTER_MS
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)

OUTAGE_S = 3.0


@activity.defn
async def echo(value: str) -> str:
    return value


@workflow.defn
class Echo:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(echo, value, start_to_close_timeout=timedelta(seconds=30))


async def test_shards_are_taken_through_an_outage_mid_acquisition(
        broker: EmbeddedBroker, own_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    struck: list[asyncio.Task[None]] = []

    def outage_first(read: Callable[..., Awaitable[int]]) -> Callable[..., Awaitable[int]]:
        async def read_after_outage(self: HistoryStore, *args: Any, **kwargs: Any) -> int:
            if not struck:  # the first read of where to resume: PostgreSQL goes away for a while
                await asyncio.to_thread(own_postgres.halt)

                async def back() -> None:
                    await asyncio.sleep(OUTAGE_S)  # the outage itself
                    await asyncio.to_thread(own_postgres.resume)
                struck.append(asyncio.create_task(back()))
            return await read(self, *args, **kwargs)
        return read_after_outage

    # Where a shard resumes: the stored offset's replay bound, or (a new broker) the rewind.
    monkeypatch.setattr(HistoryStore, "replay_until", outage_first(HistoryStore.replay_until))
    monkeypatch.setattr(HistoryStore, "rewind", outage_first(HistoryStore.rewind))
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=own_postgres.dsn, shards=CHAOS_SHARDS,
                        task_partitions=CHAOS_SHARDS, frontend_port=0, session_timeout_ms=3000,
                        stall_after_ms=STALL_AFTER_MS)
    async with Cluster(settings) as cluster:
        await eventually(lambda: struck, timeout=30, what="the outage striking an acquisition")
        await struck[0]

        def all_running() -> bool:
            shards = cluster.history.shards
            return len(shards) == CHAOS_SHARDS and all(
                s.health().state is ShardState.RUNNING for s in shards.values())
        await eventually(all_running, timeout=30, what=f"all {CHAOS_SHARDS} shards running")
        async with await Client.connect(cluster.url, namespace="default") as client, \
                Worker(client, task_queue="q-acquire", workflows=[Echo], activities=[echo]):
            ids = [f"acq-{i}-{uuid.uuid4().hex[:6]}" for i in range(2 * CHAOS_SHARDS)]  # on every shard
            handles = [await client.start_workflow(Echo.run, w, id=w, task_queue="q-acquire") for w in ids]
            assert [await h.result(timeout=30) for h in handles] == ids
        assert cluster.fatal.reason is None
