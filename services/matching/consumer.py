"""The ``kadence.tasks`` consumer of a matching instance (group ``kadence-matching``).

Each fetch is ingested whole: undecodable or misplaced records go to ``kadence.dlq``
(also one the Kafka client cannot unpack, found by services/common/unreadable.py),
duplicates of tasks handed out lately are dropped, the rest are sync-matched or stored
in the backlog, and only then are the offsets committed. The rebalance listener takes
the same lock, so a partition is never given up in the middle of a fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from kadence_protocol import avro
from kadence_protocol.kafka_security import client_options
from kadence_protocol.kafka_stop import stop_consumer
from services.common import outage, unreadable
from services.common.aio import cancel
from services.common.config import Settings
from services.common.fetch_waits import Consumer, fetch_wait_ms
from services.common.kafka import TASKS, dead_letter, new_producer, send_dead_letters
from services.common.matching.notices import UNPUBLISHED, NoticeOutcome, TaskNotice
from services.common.matching.tasks import TASK_KINDS, WORKFLOW, MatchedTask
from services.common.supervision import watch
from services.common.telemetry import consumer_span, handed_span, tracing

from .backlog import BacklogRow
from .queues import QueueKey, RecentTasks

if TYPE_CHECKING:
    from .service import MatchingService

log = logging.getLogger(__name__)

GROUP = "kadence-matching"
# How long a notice may wait for the consumer's position of its partition (a partition
# being assigned has none yet); past it the notice is dropped and the fetch delivers.
NOTICE_POSITION_WAIT_S = 0.05
# A notice sent at the commit (UNPUBLISHED) is checked against the task ids ingested within
# INGESTED_WINDOW_S. So it is taken only if handled within UNPUBLISHED_LATE_S of its arrival
# (its sender gives up after a second), and only for a partition held at least that long (a
# record a previous owner ingested is not among this instance's).
INGESTED_WINDOW_S = 5.0
UNPUBLISHED_LATE_S = 1.0


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: TaskConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._owner.batch_lock:
            await self._fatal_on_error("releasing", self._owner.service.revoke,
                                       [tp.partition for tp in revoked if tp.topic == TASKS])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._owner.batch_lock:
            now = time.monotonic()
            for tp in assigned:
                self._owner.assigned_at[tp.partition] = now
            await self._fatal_on_error("taking", self._owner.service.assign,
                                       [tp.partition for tp in assigned if tp.topic == TASKS])

    async def _fatal_on_error(self, what: str, step: Callable[[list[int]], Awaitable[None]],
                              partitions: list[int]) -> None:
        # aiokafka logs a listener's error and carries on, leaving partitions assigned and not
        # owned, their tasks skipped (outages are retried inside): anything else is fatal.
        try:
            await step(partitions)
        except Exception as exc:
            log.critical("%s task partitions %s failed", what, partitions, exc_info=True)
            self._owner.service.fatal.declare(f"{what} task partitions {partitions} failed: {exc!r}")


class _IngestFailed(Exception):
    """Ingesting records found while isolating an unreadable one failed (TaskConsumer._isolate_unreadable)."""


class TaskConsumer:
    def __init__(self, settings: Settings, service: MatchingService) -> None:
        self.settings = settings
        self.service = service
        self.batch_lock = asyncio.Lock()
        # Task ids of the records ingested lately, and when each partition was assigned: what a
        # notice sent at the commit is checked against (noticed).
        self._ingested = RecentTasks(INGESTED_WINDOW_S)
        self.assigned_at: dict[int, float] = {}
        session = settings.session_timeout_ms
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=GROUP,
            client_id=f"matching-{settings.instance_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session,
            heartbeat_interval_ms=max(100, session // 4),
            rebalance_timeout_ms=max(session, 5000),
            # Tasks noticed by history: the fetch is the fallback, with the longer wait.
            fetch_max_wait_ms=fetch_wait_ms(settings, Consumer.MATCHING, noticed=settings.task_notices),
            metadata_max_age_ms=5000,
            **client_options(settings.kafka_security),
        )
        self._producer = new_producer(settings.kafka_bootstrap, settings.kafka_security)
        self._task: asyncio.Task[None] | None = None
        self._ingest_backoff = outage.Backoff(f"ingesting {TASKS}", log)

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe([TASKS], listener=_Listener(self))
        self._task = watch(asyncio.create_task(self._run(), name="matching-consumer"),
                           "the matching consumer task", self.service.fatal)

    async def stop(self) -> None:
        """Each step runs whatever an earlier one raised (raised at the end)."""
        task, self._task = self._task, None
        async with contextlib.AsyncExitStack() as then:  # run last pushed first
            then.push_async_callback(_unless_kafka_error, self._producer.stop)
            then.push_async_callback(_unless_kafka_error, lambda: stop_consumer(self._consumer))
            await cancel(task)

    async def _run(self) -> None:
        backoff = outage.Backoff(f"fetching from {TASKS}", log)
        while True:
            try:
                try:
                    batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
                except unreadable.UNREADABLE_ERRORS:
                    # A record the client cannot unpack fails every fetch of its partition:
                    # find it and dead-letter it (unreadable.py).
                    await self._isolate_unreadable()
                    continue
            except KafkaError as exc:
                await backoff.wait(exc)
                continue
            backoff.recovered()
            if not batch:
                continue
            async with self.batch_lock:
                for tp, records in batch.items():
                    await self._ingest_partition(tp, records)

    async def _isolate_unreadable(self) -> None:
        async with self.batch_lock:
            # Every ingested fetch is committed at once (a failed one is sought back to its
            # committed offset), so a partition's committed offset is where its records
            # stopped being given.
            given: dict[TopicPartition, int] = {}
            for tp in self._consumer.assignment():
                if self.service.owns(tp.partition):
                    committed = await self._consumer.committed(tp)
                    given[tp] = committed if committed is not None else \
                        (await self._consumer.beginning_offsets([tp]))[tp]

            async def ingest(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
                if not await self._ingest_partition(tp, records):
                    # Sought back and waited: stop here, or the isolation would seek past an
                    # unreadable record not dead-lettered. The next fetch fails and starts it over.
                    raise _IngestFailed

            try:
                found = await unreadable.isolate(self._consumer, given, ingest)
            except _IngestFailed:
                return
        if not found:
            await asyncio.sleep(0.1)  # on a partition not owned yet, or slow to answer: no busy loop

    async def _ingest_partition(self, tp: TopicPartition, records: list[ConsumerRecord]) -> bool:
        """Ingest and commit; False when ingesting failed (the partition is sought back to read
        the records again after a pause)."""
        if not records or not self.service.owns(tp.partition):
            return True  # revoked while fetching: the new owner reads them again
        try:
            await self._ingest(tp, records)
        except (asyncpg.PostgresError, KafkaError, *outage.DATABASE_TRANSIENT) as exc:
            # Nothing of this fetch was committed: read it again after a pause. Tasks
            # already sync-matched are in the recent set, so they are not redelivered.
            log.warning("ingesting %s failed (%r); will re-read from offset %d", tp, exc, records[0].offset)
            self._consumer.seek(tp, records[0].offset)
            await self._ingest_backoff.wait(exc)
            return False
        self._ingest_backoff.recovered()
        try:
            await self._consumer.commit({tp: records[-1].offset + 1})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition; the next owner re-reads, duplicates collapse.
            log.warning("committing %s failed: %s", tp, exc)
        return True

    async def _ingest(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        letters: list[tuple[bytes | None, bytes]] = []
        # Per queue, in offset order: the tasks for waiting polls, and whatever they leave
        # over for the backlog.
        by_queue: dict[QueueKey, list[MatchedTask]] = {}
        seen: set[str] = set()
        for rec in records:
            # The dispatch span: the worker's task span continues from it (MatchedTask.traceparent).
            with consumer_span(rec, GROUP) as dispatch:
                reason, task, key = ((rec.reason, None, None) if isinstance(rec, unreadable.Unreadable)
                                     else self._parse(tp, rec.value, dispatch.traceparent))
                if reason is not None:
                    log.warning("dead-lettering %s@%d: %s", tp, rec.offset, reason)
                    dispatch.fail(reason)
                    letters.append((rec.key, dead_letter(
                        source_topic=tp.topic, partition=tp.partition, offset=rec.offset,
                        key=rec.key, value=rec.value or b"", reason=reason,
                    )))
                    continue
                assert task is not None and key is not None
                self.service.unnotice(task.task_id)  # a noticed copy still held gives way to the record
                self._ingested.add(task.task_id)
                if task.task_id in seen or self.service.is_duplicate(task.task_id):
                    continue
                seen.add(task.task_id)
                if dispatch.span is not None:
                    # Traced tasks are matched one by one, each inside its own dispatch span.
                    matched = self.service.try_sync_match(tp.partition, task, key)
                    dispatch.annotate(_task_attributes(task, matched))
                    if matched:
                        continue
                by_queue.setdefault(key, []).append(task)
        to_store: list[BacklogRow] = []
        for key, tasks in by_queue.items():
            given = self.service.sync_match(tp.partition, key, tasks)
            for task in tasks[given:]:
                assert task.payload is not None
                to_store.append(BacklogRow(task.task_id, tp.partition, key, task.payload, task.traceparent))
        if to_store:
            await self.service.store_backlog(to_store)
        if letters:
            await send_dead_letters(self._producer, letters)

    async def noticed(self, partition: int, notices: list[TaskNotice]) -> NoticeOutcome:
        """Hand tasks history has just committed or published (services/common/matching/notices.py)
        to polls already waiting, ahead of the fetch that brings their records.

        Only records the consumer has not been given yet are taken, read under the batch lock
        with nothing awaited between the check and the hand-over: a published notice's offset
        at or past the consumer's position; an UNPUBLISHED one's task id not among those
        ingested lately (and the notice handled within UNPUBLISHED_LATE_S, for a partition held
        at least that long). Each task taken is a task handed out lately, so the fetched
        copy is dropped as a duplicate (RecentTasks). A task no poll waits for is held in
        memory for a poll that comes before the fetch (MatchingService.hold_noticed); its
        fetched record takes it back. Nothing is stored or committed here, and every record the
        consumer already has is left to it.
        """
        tp = TopicPartition(TASKS, partition)
        received = time.monotonic()
        async with self.batch_lock:
            if not self.service.owns(partition):
                return NoticeOutcome(left=len(notices))
            position = 0
            if any(n.offset != UNPUBLISHED for n in notices):
                try:
                    async with asyncio.timeout(NOTICE_POSITION_WAIT_S):
                        position = await self._consumer.position(tp)
                except (TimeoutError, IllegalStateError, KafkaError):
                    return NoticeOutcome(left=len(notices))
            now = time.monotonic()
            early_ok = (now - received < UNPUBLISHED_LATE_S
                        and now - self.assigned_at.get(partition, 0.0) >= UNPUBLISHED_LATE_S)
            fresh = [n for n in notices if n.offset >= position or (n.offset == UNPUBLISHED and early_ok)]
            stale = len(notices) - len(fresh)
            by_queue: dict[QueueKey, list[MatchedTask]] = {}
            matched = 0
            for n in fresh:
                reason, task, key = self._parse(tp, n.value)
                if reason is not None or task is None or key is None or self.service.is_duplicate(task.task_id):
                    continue  # the fetch dead-letters what does not parse
                if n.offset == UNPUBLISHED and task.task_id in self._ingested:
                    stale += 1  # the consumer has had its record
                    continue
                if tracing():
                    # As the consumer does for a traced task: matched inside the dispatch span
                    # the worker continues; a task left to the fetch gets its span there.
                    matched += self._traced_notice(tp, n, task, key)
                else:
                    if n.updates is not None and task.kind == WORKFLOW:
                        # The update requests of the commit that wrote it: a poll handed it now
                        # answers with them, without reading them (held, it loses them).
                        task = replace(task, updates=n.updates)
                    by_queue.setdefault(key, []).append(task)
            for key, tasks in by_queue.items():
                given = self.service.sync_match(partition, key, tasks)
                # No poll waits for the rest: held for the next polls until the fetch brings them.
                self.service.hold_noticed(partition, key, tasks[given:])
                matched += given
        return NoticeOutcome(matched=matched, stale=stale, left=len(notices) - stale - matched)

    def _traced_notice(self, tp: TopicPartition, notice: TaskNotice, task: MatchedTask, key: QueueKey) -> bool:
        with handed_span(TASKS, f"{key.namespace}/{key.task_queue}".encode(), notice.headers, GROUP,
                         {"kadence.notice": True}) as dispatch:
            traced = MatchedTask(task.kind, task.task_id, task.task, task.payload, dispatch.traceparent)
            matched = self.service.try_sync_match(tp.partition, traced, key)
            dispatch.annotate(_task_attributes(task, matched))
            return matched

    def _parse(
        self, tp: TopicPartition, value: bytes | None, traceparent: str | None = None,
    ) -> tuple[str | None, MatchedTask | None, QueueKey | None]:
        if not isinstance(value, bytes):
            return "record has no value", None, None
        try:
            name, record = avro.decode(value)
        except avro.DecodeError as exc:
            return f"cannot decode: {exc}", None, None
        kind = TASK_KINDS.get(name)
        if kind is None:
            return f"{name} does not belong on {TASKS}", None, None
        key = QueueKey(record["namespace"], record["task_queue"], kind)
        expected = self.service.partition_of(key.namespace, key.task_queue)
        if expected != tp.partition:
            return (f"task queue {key.namespace}/{key.task_queue} belongs on partition {expected},"
                    f" found on {tp.partition} (wrong record key)"), None, None
        return None, MatchedTask(kind, record["task_id"], record, value, traceparent), key


def _task_attributes(task: MatchedTask, sync_match: bool) -> dict[str, object]:
    t = task.task
    return {"kadence.workflow_id": t["workflow_id"], "kadence.run_id": t["run_id"],
            "kadence.workflow_type": t.get("workflow_type") or "", "kadence.task_queue": t["task_queue"],
            "kadence.task_kind": task.kind, "kadence.task_id": task.task_id, "kadence.sync_match": sync_match}


async def _unless_kafka_error(stop: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(KafkaError):  # the broker may be gone: the stop goes on
        await stop()
