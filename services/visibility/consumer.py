"""The visibility projection as a plain aiokafka consumer loop: how ``kadence dev`` (and the
cluster of the tests) keeps the visibility rows, in process.

The faust app (``stream.py``, ``python -m services.visibility``) runs the same projection
and store as a process of its own; in process a faust worker would bring its own service
tree, signal handling and thread pools into the cluster's event loop for a loop this small.

Each round's records are folded straight from their bytes (``shortcut.fold``: in full only
the events whose attributes a row takes), 128 records per turn of the event loop, written
in one transaction (``store.apply``: a statement per 256 runs), and only then are the
offsets committed to Kafka (group ``kadence-visibility``): a crash in between delivers the
records again, which the store's last-event check makes harmless.
In one process (``kadence dev``) the relays hand over what they published (``handover.py``):
a partition's handed records are taken as a run contiguous from the consumer's position,
and a partition the hand-over keeps up with is paused (not fetched); a look at the log ends
every LOOK_S resumes fetching one whose log holds a record nobody handed over.
Database and broker errors are retried with backoff on the same fetch; any other error
is a bug, and brings the process down (logged) rather than leaving visibility frozen; a
record the Kafka client cannot unpack is read past and skipped (unreadable.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from kadence_protocol.kafka_security import KafkaSecurity, client_options
from kadence_protocol.kafka_stop import stop_consumer
from services.common import outage, telemetry, unreadable
from services.common.aio import cancel
from services.common.kafka import HISTORY
from services.common.supervision import Fatal, watch

from . import projection, shortcut, store
from .handover import Handover

log = logging.getLogger(__name__)

GROUP = "kadence-visibility"
MAX_BACKOFF_S = 5.0
# Long fetches: visibility may trail history by a fraction of a second, and every fetch
# that returns records costs the development broker a listing of the partition's batches
# (docs/architecture.md), which under a burst of starts took throughput from the services
# beside it. Fewer, larger fetches also fold more events of a run into one row update.
FETCH_WAIT_MS = 500
FETCH_MIN_BYTES = 256 * 1024
# With a hand-over: how often the log ends of partitions not fetched are looked up (_look).
LOOK_S = 1.0
DRAIN_POLL_S = 0.05  # how often drain() looks whether the projection has caught up
# Records folded per turn of the event loop. The fold is CPU alone, and a round takes every
# record published since the last (thousands after a burst): folded at once, it held the
# loop, and every hop of the services beside it, for milliseconds (decision 0023).
FOLD_SLICE = 128
TAKE_SLICE = 1024  # records taken out of the hand-over per turn, for the same reason


@dataclass
class _Run:
    """What a round projects of one partition: the records from the consumer's position on,
    fetched or handed, without a hole, and the offset past them."""

    values: list[bytes | None]
    offsets: Sequence[int]
    end: int
    handed: bool = False


async def fold_in_slices(values: Sequence[bytes | None], skipped: Callable[[int, projection.Skipped], None],
                         size: int = FOLD_SLICE) -> list[projection.RunUpdate]:
    """``shortcut.fold`` of ``values``, ``size`` records per turn of the event loop."""
    updates: dict[bytes, projection.RunUpdate] = {}
    for first in range(0, len(values), size):
        if first:
            await asyncio.sleep(0)
        shortcut.fold(values[first:first + size], skipped, into=updates, first=first)
    return list(updates.values())


async def take_in_slices(handover: Handover, partition: int, position: int,
                         size: int = TAKE_SLICE) -> list[bytes]:
    """``Handover.take`` of every record handed from ``position`` on without a hole, ``size``
    records per turn of the event loop."""
    values: list[bytes] = []
    while True:
        taken = handover.take(partition, position + len(values), size)
        values.extend(taken)
        if len(taken) < size:
            return values
        await asyncio.sleep(0)


class VisibilityConsumer:
    """Keeps ``visibility`` up to date with ``kadence.history``; ``lag()`` says how far behind.

    ``handover``: the records this process's relays published, handed over (handover.py);
    None (another process, or ``KADENCE_COLOCATE=0``): every record is fetched."""

    def __init__(self, bootstrap: str, pool: asyncpg.Pool, *, group: str = GROUP, session_timeout_ms: int = 10000,
                 fetch_wait_ms: int = FETCH_WAIT_MS, max_records: int = 5000,
                 security: KafkaSecurity | None = None, fatal: Fatal | None = None,
                 handover: Handover | None = None) -> None:
        self.fatal = fatal  # declared if the loop dies (kadence dev's); None: SIGTERM to this process
        self.pool = pool
        self.max_records = max_records
        self.handover = handover
        self.skipped = 0  # records that were not HistoryRecords (logged; the audit reports them too)
        self.write_failures = 0  # writes the database refused (each retried)
        self.fetched = 0  # records projected as fetched
        self.handed = 0  # records projected as handed over (handover.py)
        self.left_out: list[str] = []  # data the database refused for good (store.apply), newest last
        self._fetch_wait_ms = fetch_wait_ms
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
        self._ends: dict[TopicPartition, int] = {}  # log ends of paused partitions, as last looked up
        self._behind: dict[TopicPartition, int] = {}  # paused partitions the last look found behind, at
        self._looked = 0.0

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe([HISTORY], listener=_Revoked(self))
        self._task = asyncio.create_task(self._run(), name="visibility-consumer")
        if self.fatal is not None:
            watch(self._task, "the visibility consumer", self.fatal)
        else:
            self._task.add_done_callback(_die_unless_cancelled)
        telemetry.register_visibility(self)

    async def stop(self) -> None:
        """Each step runs whatever an earlier one raised (raised at the end)."""
        task, self._task = self._task, None

        async def stop_group_consumer() -> None:
            with contextlib.suppress(KafkaError):
                await stop_consumer(self._consumer)

        async with contextlib.AsyncExitStack() as then:  # run last pushed first
            then.push_async_callback(stop_group_consumer)
            telemetry.unregister_visibility(self)
            if task is not None and not task.done():
                await cancel(task)  # a cancelled loop is no death: neither callback reacts

    async def drain(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until every record of the partitions this
        consumer holds is projected (whether true). A one-process cluster calls it at its
        stop, after history's: the development broker keeps nothing across a restart, so
        a run closed just before the stop would otherwise never be listed."""
        deadline = time.monotonic() + timeout
        while self._task is not None and not self._task.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if await asyncio.wait_for(self._caught_up(), left):
                    return True
            except (KafkaError, TimeoutError):
                return False
            await asyncio.sleep(min(DRAIN_POLL_S, max(0.0, deadline - time.monotonic())))
        return False

    async def _caught_up(self) -> bool:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return False  # not yet in the group: its records are still to be fetched
        ends = await self._consumer.end_offsets(assigned)
        for tp in assigned:
            # What was written, else what the group committed (else the log's start).
            position = self._positions.get(tp)
            if position is None:
                position = await self._consumer.committed(tp)
            if position is None:
                position = (await self._consumer.beginning_offsets([tp]))[tp]
            # The log end as the broker tells it, or past what this process's relays handed
            # over (the development broker's answer may lag what it acknowledged).
            end = max(ends[tp], self.handover.end(tp.partition) if self.handover is not None else 0)
            if position < end:
                return False
        return True

    def lag(self) -> dict[int, int]:
        """Records of each assigned kadence.history partition not yet projected (log end - position)."""
        return dict(self._lag)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                try:
                    batch = await self._consumer.getmany(timeout_ms=self._fetch_wait_ms,
                                                         max_records=self.max_records)
                except unreadable.UNREADABLE_ERRORS:
                    # A record the client cannot unpack fails every fetch of its partition: read
                    # up to it and past it (it is skipped, logged naming its offset; unreadable.py).
                    batch = await self._isolate_unreadable()
            except KafkaError:
                log.exception("fetching %s failed; retrying in %.1fs", HISTORY, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            runs = await self._runs(batch)
            if runs:
                await self._project(runs)
            if self.handover is not None:
                await self._look()
            self._measure_lag()

    async def _isolate_unreadable(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The records of the assigned partitions from their projected positions (or the
        group's stored offsets) up to and including one the client cannot unpack."""
        given: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            position = self._positions.get(tp)
            if position is None:
                position = await self._consumer.committed(tp)
            if position is None:
                position = (await self._consumer.beginning_offsets([tp]))[tp]
            given[tp] = position
        found: dict[TopicPartition, list[ConsumerRecord]] = {}

        async def take(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
            found.setdefault(tp, []).extend(records)

        if not await unreadable.isolate(self._consumer, given, take):
            await asyncio.sleep(0.1)  # the partition slow to answer: no busy loop meanwhile
        return found

    async def _runs(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, _Run]:
        """The fetched records past what was applied, and the handed ones that follow without a hole."""
        runs: dict[TopicPartition, _Run] = {}
        for tp, records in batch.items():
            position = self._positions.get(tp)
            if position is not None and records[0].offset < position:
                records = [r for r in records if r.offset >= position]  # applied from the hand-over
            if records:
                runs[tp] = _Run([r.value for r in records], [r.offset for r in records], records[-1].offset + 1)
                self.fetched += len(records)
        if self.handover is None:
            return runs
        for tp in self._consumer.assignment():
            if not self.handover.waiting(tp.partition):
                continue
            run = runs.get(tp)
            position = run.end if run is not None else self._positions.get(tp)
            if position is None:
                try:  # the stored offset, once the group has given this consumer the partition
                    position = await self._consumer.position(tp)
                except KafkaError:
                    continue
                self._positions.setdefault(tp, position)
            values = await take_in_slices(self.handover, tp.partition, position)
            if not values:
                continue
            offsets = range(position, position + len(values))
            self.handed += len(values)
            if run is None:
                handed: list[bytes | None] = list(values)
                runs[tp] = _Run(handed, offsets, offsets.stop, handed=True)
            else:
                run.values.extend(values)
                run.offsets = [*run.offsets, *offsets]
                run.end, run.handed = offsets.stop, True
        return runs

    async def _project(self, runs: dict[TopicPartition, _Run]) -> None:
        values = [v for run in runs.values() for v in run.values]
        updates = await fold_in_slices(values, functools.partial(self._skipped, runs))
        backoff = 0.1
        while True:
            try:
                self.left_out = (self.left_out + await store.apply(self.pool, updates))[-100:]
                break
            except outage.DATABASE_ERRORS:
                # Heal: the same records again until the database takes it (nothing is committed).
                self.write_failures += 1
                log.exception("writing %d visibility rows failed; retrying in %.1fs", len(updates), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        record_delay(updates)
        assigned = self._consumer.assignment()
        for tp, run in runs.items():
            if tp not in assigned:
                continue  # revoked meanwhile: its next reader goes on from the offset stored
            self._positions[tp] = run.end
            if self.handover is None:
                continue
            # The hand-over has the records that follow (it had the last one fetched, or has
            # the next): they come from it, and the partition is no longer fetched (_look
            # resumes it if a record is not handed over). Left fetching, a partition whose
            # fetches reach its log end would take every record by a fetch first.
            follows = run.handed or self.handover.has(tp.partition, run.end - 1) \
                or self.handover.has(tp.partition, run.end)
            self.handover.forget_below(tp.partition, run.end)
            if follows:
                self._consumer.seek(tp, run.end)
                self._consumer.pause(tp)
        try:
            await self._consumer.commit({tp: run.end for tp, run in runs.items()})
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance moved a partition: its next reader projects it again, harmlessly.
            log.warning("committing visibility offsets failed: %s", exc)

    def _skipped(self, runs: dict[TopicPartition, _Run], index: int, exc: projection.Skipped) -> None:
        self.skipped += 1
        for tp, run in runs.items():
            if index < len(run.values):
                log.warning("visibility: skipping %s[%d]@%d: %s", tp.topic, tp.partition, run.offsets[index], exc)
                return
            index -= len(run.values)

    async def _look(self) -> None:
        """Every LOOK_S: resume fetching a paused partition whose log holds, at the consumer's
        position, a record nobody handed over (another process's, one dropped, or one
        published before this consumer started), found so at two looks in a row (a record
        is handed just after its acknowledgement, which a look may see first)."""
        now = time.monotonic()
        if now - self._looked < LOOK_S:
            return
        self._looked = now
        assert self.handover is not None
        assigned = self._consumer.assignment()
        self.handover.keep_only(tp.partition for tp in assigned)
        paused = [tp for tp in self._consumer.paused() if tp in assigned]
        if not paused:
            self._behind.clear()
            return
        try:
            ends = await self._consumer.end_offsets(paused)
        except KafkaError as exc:
            log.warning("looking up the log ends of %s failed (looked up again in %.1fs): %s", HISTORY, LOOK_S, exc)
            return
        for tp in paused:
            end, position = ends.get(tp), self._positions.get(tp)
            if end is None or position is None:
                continue
            self._ends[tp] = end
            if end <= position or self.handover.has(tp.partition, position):
                self._behind.pop(tp, None)
            elif self._behind.get(tp) == position:
                log.info("visibility: %s[%d] holds records at %d not handed over; fetching them",
                         tp.topic, tp.partition, position)
                self._behind.pop(tp)
                self._consumer.seek(tp, position)
                self._consumer.resume(tp)
            else:
                self._behind[tp] = position

    def _forget(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self._positions.pop(tp, None)
            self._ends.pop(tp, None)
            self._behind.pop(tp, None)

    def _measure_lag(self) -> None:
        lag: dict[int, int] = {}
        paused = self._consumer.paused()
        for tp in self._consumer.assignment():
            end, position = self._consumer.highwater(tp), self._positions.get(tp)
            if tp in paused or end is None:
                # Not fetched: the log end as last looked up, or past the last record handed over.
                end = max(end or 0, self._ends.get(tp, 0), self.handover.end(tp.partition) if self.handover else 0)
            if position is not None:
                lag[tp.partition] = max(0, end - position)
        self._lag = lag


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forgets the positions of partitions the group gave to another consumer."""

    def __init__(self, consumer: VisibilityConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._consumer._forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


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
