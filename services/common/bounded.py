"""A finite read of one topic: from a start point up to the end offsets seen at the start.

Operator tools (``kadence dlq``, ``kadence audit``) must never block forever on a busy
topic, nor disturb anyone: they read without a consumer group (nothing committed, no
rebalance), assign every partition themselves, and stop at the high-water marks
captured when the read began. Records produced afterwards belong to the next run.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from kadence_protocol.kafka_security import client_options
from kadence_protocol.kafka_stop import stop_consumer

from . import unreadable

__all__ = ["BoundedRead", "BrokerUnreachable", "TopicReadError"]


class TopicReadError(Exception):
    """The topic is missing, or stopped delivering before its captured end was reached."""


class BrokerUnreachable(TopicReadError):
    """No broker answered at the bootstrap address."""


class BoundedRead:
    """``async with BoundedRead(bootstrap, topic) as read: async for record in read: ...``

    ``from_time_ms`` starts each partition at the first record at or after that time
    (Kafka's offsets-for-times); otherwise the read starts at the beginning. ``total``
    is the number of offsets to read, known once entered (for a progress bar).
    """

    def __init__(self, bootstrap: str, topic: str, *, from_time_ms: int | None = None,
                 stall_timeout: float = 15.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.from_time_ms = from_time_ms
        self.stall_timeout = stall_timeout
        self.starts: dict[TopicPartition, int] = {}
        self.ends: dict[TopicPartition, int] = {}
        self.skipped = 0  # records before from_time_ms that the broker's offsets still covered
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                          **client_options())

    @property
    def total(self) -> int:
        return sum(self.ends[tp] - self.starts[tp] for tp in self.ends)

    async def __aenter__(self) -> BoundedRead:
        consumer = self._consumer
        try:
            await consumer.start()
        except KafkaError as exc:
            await stop_consumer(consumer)  # releases what start() had opened
            raise BrokerUnreachable(f"cannot reach the Kafka broker at {self.bootstrap}"
                                    f" ({type(exc).__name__}); is it running, and is --bootstrap right?") from None
        try:
            tps = await self._partitions()
            consumer.assign(tps)
            # The end is captured before anything is read: that is what makes the read finite.
            self.ends = await self._end_offsets(tps)
            beginnings = await consumer.beginning_offsets(tps)
            if self.from_time_ms is None:
                self.starts = dict(beginnings)
            else:
                found = await consumer.offsets_for_times({tp: self.from_time_ms for tp in tps})
                self.starts = {tp: (self.ends[tp] if found[tp] is None else found[tp].offset) for tp in tps}
            for tp in tps:
                consumer.seek(tp, self.starts[tp])
        except BaseException:
            await stop_consumer(consumer)
            raise
        return self

    async def _partitions(self) -> list[TopicPartition]:
        await self._consumer.topics()  # loads cluster metadata, so the partitions are known
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TopicReadError(f"topic {self.topic} does not exist")
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]

    async def _end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        consumer = self._consumer
        ends = dict(await consumer.end_offsets(tps))
        # The development broker answers ListOffsets(latest) with the last batch's base
        # offset + 1, short of a batch of several records; a fetch of that last batch
        # reports the true high watermark, so the end is confirmed by one small fetch.
        probe = {tp for tp in tps if ends[tp] > 0}
        for tp in probe:
            consumer.seek(tp, ends[tp] - 1)
        deadline = time.monotonic() + self.stall_timeout
        while probe and time.monotonic() < deadline:
            try:
                await consumer.getmany(*probe, timeout_ms=200)
            except unreadable.UNREADABLE_ERRORS:
                pass  # the fetch answered (its high watermark is known) with a record the read reports
            for tp in list(probe):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(ends[tp], highwater)
                    probe.discard(tp)
        return ends

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await stop_consumer(self._consumer)

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        consumer = self._consumer
        remaining = {tp for tp in self.ends if self.starts[tp] < self.ends[tp]}
        given = {tp: self.starts[tp] for tp in remaining}  # the offset after the last record yielded
        last_progress = time.monotonic()
        while remaining:
            try:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
            except unreadable.UNREADABLE_ERRORS:
                # A record the client cannot unpack fails every fetch of its partition.
                batches = await _isolated(consumer, {tp: given[tp] for tp in remaining})
            for tp, records in batches.items():
                if records:
                    given[tp] = records[-1].offset + 1
                for record in records:
                    if record.offset >= self.ends[tp]:
                        break
                    last_progress = time.monotonic()
                    # Offsets-for-times is a hint some brokers answer coarsely (the
                    # development broker: the beginning); the record's own time decides.
                    if self.from_time_ms is not None and record.timestamp < self.from_time_ms:
                        self.skipped += 1
                        continue
                    yield record
            for tp in list(remaining):
                # Positions can pass offsets that hold no record (transaction markers,
                # compaction), so completion is judged by position, not by the last record.
                if await consumer.position(tp) >= self.ends[tp]:
                    remaining.discard(tp)
            if remaining and time.monotonic() - last_progress > self.stall_timeout:
                raise TopicReadError(
                    f"{self.topic}: no record for {self.stall_timeout:.0f} s before the end offsets "
                    f"{ {tp.partition: self.ends[tp] for tp in remaining} } were reached")


async def _isolated(consumer: AIOKafkaConsumer,
                    given: dict[TopicPartition, int]) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """The records after ``given`` up to and including one the client cannot unpack."""
    found: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}

    async def take(tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        found.setdefault(tp, []).extend(records)

    await unreadable.isolate(consumer, given, take)
    return found
