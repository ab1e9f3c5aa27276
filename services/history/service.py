"""The history service: owns the shards Kafka assigns it, one Shard per partition.

A group assignment is not a lock: each shard acquisition bumps range_id in
PostgreSQL, and every commit checks it (see store.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.common import db, kafka
from services.common.aio import cancel
from services.common.config import Settings
from services.common.namespaces import namespace_registered

from .gate import FetchGate
from .memory import Tails
from .neighbours import HandedCommand, Neighbours
from .periodic import run_every
from .resume import Resume, resume_from
from .retention import RetentionJob
from .scheduler import Scheduler
from .shard import Shard
from .store import HistoryStore
from .telemetry import ShardFactory, shard_factory

log = logging.getLogger(__name__)

GROUP = "kadence-history"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: HistoryService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.service._release([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.service._acquire([tp.partition for tp in assigned])


class HistoryService:
    def __init__(self, settings: Settings, *, pool: asyncpg.Pool | None = None) -> None:
        self.settings = settings
        self._own_pool = pool is None
        self.pool = pool
        self.shards: dict[int, Shard] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Started by the first command a frontend in this process hands over (see gate.py).
        self._gate: FetchGate | None = None
        self._gate_task: asyncio.Task[None] | None = None
        self._fresh: set[int] = set()
        self._new_shard: ShardFactory = Shard
        self._stopping = False
        self._jobs: list[asyncio.Task[Any]] = []
        # What services in this process take from every shard's commits (see Neighbours).
        self.neighbours = Neighbours()

    async def start(self, *, fresh_broker: bool = False) -> None:
        """Start consuming. ``fresh_broker``: the topics were just created, so stored
        offsets belong to a broker that is gone and consumption restarts at 0."""
        # Only the first acquisition of each partition may restart it at 0: a later one
        # (a rebalance) must resume from the stored offset or commands would run twice.
        self._fresh = set(range(self.settings.shards)) if fresh_broker else set()
        if self.pool is None:
            self.pool = await db.create_pool(self.settings.database_url, max_size=max(4, self.settings.shards + 2))
        try:
            await db.fix_cluster_setting(self.pool, "shards", str(self.settings.shards), hint=(
                " (history shards = kadence.requests partitions, fixed when the cluster was created:"
                " set KADENCE_SHARDS to the recorded count)"))
        except db.ClusterMismatch:
            if self._own_pool:
                await self.pool.close()
                self.pool = None
            raise
        self.store = HistoryStore(self.pool)
        self._producer = kafka.new_producer(self.settings.kafka_bootstrap)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,  # offsets live in PostgreSQL, in the batch transaction
            auto_offset_reset="earliest",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 4),
            fetch_max_wait_ms=self.settings.history_fetch_wait_ms,
            max_poll_records=2000,
        )
        self._new_shard = shard_factory(self._consumer)  # instrumented when tracing or metrics are on
        self._consumer.subscribe([kafka.REQUESTS], listener=_Rebalance(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._consume())
        self._start_jobs()

    def owned(self) -> dict[int, int]:
        """The shards this process holds now, with the range_id each was acquired with."""
        return {p: shard.range_id for p, shard in self.shards.items() if not shard.lost.is_set()}

    def _start_jobs(self) -> None:
        """Retention and the scheduler, over the owned shards (retention.py, scheduler.py)."""
        assert self.pool is not None
        s = self.settings
        self.retention = RetentionJob(self.pool, self.owned, batch=s.retention_batch)
        self.scheduler = Scheduler(self.pool, self._producer, self.owned)
        self._jobs = [
            asyncio.create_task(run_every("retention", lambda: s.retention_interval_ms / 1000,
                                          self.retention.round), name="history-retention"),
            asyncio.create_task(run_every("scheduler", lambda: s.scheduler_interval_ms / 1000,
                                          self.scheduler.round), name="history-scheduler"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for job in self._jobs:
            await cancel(job)
        await cancel(self._gate_task)
        await cancel(self._task)
        await self._release(list(self.shards))
        if self._consumer is not None:
            await self._consumer.stop()
        # A rebalance under way when the stop began may have finished taking partitions
        # since: their shards must not outlive the pool.
        await self._release(list(self.shards))
        await self._producer.stop()
        if self._own_pool and self.pool is not None:
            await self.pool.close()

    async def _acquire(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        for p in partitions:
            if p in self.shards or self._stopping:
                continue
            shard = self._new_shard(p, self.store, self._producer, self.settings.instance_id)
            shard.neighbours = self.neighbours
            shard.request_id_retention_s = self.settings.request_id_retention_s
            shard.namespace_registered = functools.partial(namespace_registered, self.pool)
            shard.tails = Tails(self.settings.history_tail_run_bytes, self.settings.history_tail_shard_bytes)
            offset = await shard.acquire()
            tp = TopicPartition(kafka.REQUESTS, p)
            end = (await self._consumer.end_offsets([tp]))[tp]
            fresh = p in self._fresh
            self._fresh.discard(p)
            how = resume_from(offset, end, fresh_broker=fresh, rewind_lost=self.settings.rewind_lost_partitions)
            if how is Resume.STORED:
                if offset > end:
                    # Never rewind on a guess (see resume.py): the broker may report a batch's base.
                    log.warning("shard %d: stored offset %d is past the reported log end %d; resuming at %d"
                                " (KADENCE_REWIND_LOST_PARTITIONS=1 re-reads a partition the broker lost)",
                                p, offset, end, offset)
                shard.ledger.replay_until = await self.store.replay_until(p)
            else:
                # A new broker, or one that lost records: tasks it carried may be gone too,
                # so send every unstarted task again.
                if how is Resume.REWIND:
                    log.warning("shard %d: stored offset %d is past the log end %d; rewinding to 0 as told,"
                                " records below %d are taken as copies", p, offset, end, offset)
                shard.ledger.replay_until = await self.store.rewind(p, shard.range_id, fresh=how is Resume.FRESH)
                offset = 0
                await shard.redispatch(force=True)
            self._consumer.seek(tp, offset)
            shard.consumed = shard.fed = offset
            shard.skip_to = functools.partial(self._skip_to, tp)
            shard.fetch_needed = functools.partial(self._fetch_needed, p)
            if self._stopping:
                return  # the service stopped while this shard was being acquired
            shard.start()
            self.shards[p] = shard

    async def _release(self, partitions: list[int]) -> None:
        for p in partitions:
            shard = self.shards.pop(p, None)
            if self._gate is not None:
                self._gate.forget(p)
            if shard is not None:
                await shard.stop()

    def _skip_to(self, tp: TopicPartition, offset: int) -> None:
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    def _fetch_needed(self, partition: int) -> None:
        if self._gate is not None:
            self._gate.fetch(partition)

    def take_queued(self, partition: int, key: bytes, value: bytes, acked: asyncio.Future[Any]) -> None:
        """A command a frontend in this process has just queued for the broker, with the
        future of the broker's answer. If this process owns the partition, its shard takes
        the command without waiting for the fetch: ahead of the acknowledgement when it has
        nothing else to do (Shard.offer_early), otherwise once acknowledged (Shard.offer)."""
        if self._gate is None and self._consumer is not None and not self._stopping:
            self._gate = FetchGate(self._consumer, self.shards)
            self._gate_task = asyncio.create_task(self._gate.run(), name="history-fetch-gate")
        shard = self.shards.get(partition)
        if shard is None or shard.lost.is_set():
            return
        if self._gate is not None:
            self._gate.in_flight[partition] += 1
        shard.offer_early(HandedCommand(kafka.REQUESTS, partition, -1, key, value), acked)
        # Callbacks run in the order the broker acknowledged the records, so the shard is
        # offered its partition's commands in offset order.
        acked.add_done_callback(functools.partial(self._acked, partition, key, value))

    def _acked(self, partition: int, key: bytes, value: bytes, acked: asyncio.Future[Any]) -> None:
        ok = not acked.cancelled() and acked.exception() is None
        if self._gate is not None:
            self._gate.in_flight[partition] -= 1
            if ok:
                self._gate.acked(partition, acked.result().offset)  # before the shard may drop it
        if ok:
            self.take_acked(partition, acked.result().offset, key, value)

    def take_acked(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        """A command the broker has acknowledged at ``offset``: its shard, if this process
        owns it, takes it without waiting for the fetch (see Shard.offer)."""
        shard = self.shards.get(partition)
        if shard is not None and not shard.lost.is_set():
            shard.offer(HandedCommand(kafka.REQUESTS, partition, offset, key, value))

    async def _consume(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                shard = self.shards.get(tp.partition)
                if shard is None or shard.lost.is_set():
                    continue
                await shard.feed(records)
