"""The visibility projection as a plain aiokafka consumer loop: how ``kadence dev`` (and the
cluster of the tests) keeps the visibility rows, in process.

The faust app (``stream.py``, ``python -m services.visibility``) runs the same projection
and store as a process of its own; in process a faust worker would bring its own service
tree, signal handling and thread pools into the cluster's event loop for a loop this small.

Each fetch is decoded by ``shortcut.py`` (in full only the events whose attributes a row
takes), folded (``projection.fold``), written in one statement (``store.apply``),
and only then are the offsets committed to Kafka (group ``kadence-visibility``): a crash
in between delivers the fetch again, which the store's last-event check makes harmless.
Database and broker errors are retried with backoff on the same fetch; any other error
is a bug, and brings the process down (logged) rather than leaving visibility frozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from kadence_protocol.kafka_security import KafkaSecurity, client_options
from services.common import outage, telemetry
from services.common.aio import cancel
from services.common.kafka import HISTORY
from services.common.supervision import Fatal, watch

from . import projection, shortcut, store

log = logging.getLogger(__name__)

GROUP = "kadence-visibility"
MAX_BACKOFF_S = 5.0
# Long fetches: visibility may trail history by a fraction of a second, and every fetch
# that returns records costs the development broker a listing of the partition's batches
# (docs/architecture.md), which under a burst of starts took throughput from the services
# beside it. Fewer, larger fetches also fold more events of a run into one row update.
FETCH_WAIT_MS = 500
FETCH_MIN_BYTES = 256 * 1024


class VisibilityConsumer:
    """Keeps ``visibility`` up to date with ``kadence.history``; ``lag()`` says how far behind."""

    def __init__(self, bootstrap: str, pool: asyncpg.Pool, *, group: str = GROUP, session_timeout_ms: int = 10000,
                 fetch_wait_ms: int = FETCH_WAIT_MS, max_records: int = 5000,
                 security: KafkaSecurity | None = None, fatal: Fatal | None = None) -> None:
        self.fatal = fatal  # declared if the loop dies (kadence dev's); None: SIGTERM to this process
        self.pool = pool
        self.max_records = max_records
        self.skipped = 0  # records that were not HistoryRecords (logged; the audit reports them too)
        self.write_failures = 0  # writes the database refused (each retried)
        self.left_out: list[str] = []  # data the database refused for good (store.apply), newest last
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, client_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 4),
            rebalance_timeout_ms=max(session_timeout_ms, 5000), fetch_max_wait_ms=fetch_wait_ms,
            fetch_min_bytes=FETCH_MIN_BYTES, max_partition_fetch_bytes=4 * 1024 * 1024,
            metadata_max_age_ms=5000, **client_options(security),
        )
        self._task: asyncio.Task[None] | None = None
        self._lag: dict[int, int] = {}
        self._positions: dict[TopicPartition, int] = {}  # the next offset to project, per partition

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([HISTORY])
        self._task = asyncio.create_task(self._run(), name="visibility-consumer")
        if self.fatal is not None:
            watch(self._task, "the visibility consumer", self.fatal)
        else:
            self._task.add_done_callback(_die_unless_cancelled)
        telemetry.register_visibility(self)

    async def stop(self) -> None:
        telemetry.unregister_visibility(self)
        task, self._task = self._task, None
        if task is not None and not task.done():
            await cancel(task)  # a cancelled loop is no death: neither callback reacts
        with contextlib.suppress(KafkaError):
            await self._consumer.stop()

    def lag(self) -> dict[int, int]:
        """Records of each assigned kadence.history partition not yet projected (log end - position)."""
        return dict(self._lag)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=self.max_records)
            except KafkaError:
                log.exception("fetching %s failed; retrying in %.1fs", HISTORY, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if batch:
                await self._project(batch)
            self._measure_lag()

    async def _project(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        updates = projection.fold(self._decoded(r for records in batch.values() for r in records))
        backoff = 0.1
        while True:
            try:
                self.left_out = (self.left_out + await store.apply(self.pool, updates))[-100:]
                break
            except outage.DATABASE_ERRORS:
                # Heal: the same fetch again until the database takes it (nothing is committed).
                self.write_failures += 1
                log.exception("writing %d visibility rows failed; retrying in %.1fs", len(updates), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        record_delay(updates)
        self._positions.update({tp: records[-1].offset + 1 for tp, records in batch.items()})
        try:
            await self._consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance moved a partition: its next reader projects it again, harmlessly.
            log.warning("committing visibility offsets failed: %s", exc)

    def _decoded(self, records: Iterable[ConsumerRecord]) -> Iterable[dict[str, Any]]:
        for record in records:
            try:
                yield shortcut.decode(record.value)
            except projection.Skipped as exc:
                self.skipped += 1
                log.warning("visibility: skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)

    def _measure_lag(self) -> None:
        lag: dict[int, int] = {}
        for tp in self._consumer.assignment():
            end, position = self._consumer.highwater(tp), self._positions.get(tp)
            if end is not None and position is not None:
                lag[tp.partition] = max(0, end - position)
        self._lag = lag


def record_delay(updates: Iterable[projection.RunUpdate]) -> None:
    """Observe, per run updated, the time from its newest event to its row being written."""
    metrics = telemetry.metrics()
    if metrics is None:
        return
    now_ms = time.time() * 1000
    for update in updates:
        metrics.visibility_delay.record(max(0.0, (now_ms - update.newest_event_time) / 1000))


def _die_unless_cancelled(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    log.critical("the visibility consumer stopped on an unexpected error; stopping the process",
                 exc_info=task.exception())
    os.kill(os.getpid(), signal.SIGTERM)
