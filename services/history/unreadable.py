"""Records of ``kadence.requests`` that the Kafka client cannot read at all.

Kafka's protocol carries any bytes as a header key, but aiokafka reads header keys as
UTF-8 and raises while unpacking a fetch that holds one that is not: a producer speaking
the protocol itself (the Java client cannot write such a key) would make every fetch of
its partition fail, for ever, and with it the consumer of every shard of the process.
Such a record is found by reading the failing partition one record at a time, and taken
by its shard as an :class:`Unreadable` record, dead-lettered with the reason, so the
stored offset moves past it and the partition goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)

# What aiokafka raises unpacking a fetched record it cannot read (a header key not UTF-8).
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (UnicodeDecodeError,)
# How long to wait for a partition's records while looking for the unreadable one.
PROBE_WAIT_MS = 1000


@dataclasses.dataclass
class Unreadable(ConsumerRecord[bytes, bytes]):  # type: ignore[misc]  # aiokafka has no types
    """A record the client could not unpack: its offset and why, nothing of its content."""

    reason: str = ""


def unreadable(tp: TopicPartition, offset: int, exc: BaseException) -> Unreadable:
    where = f"{tp.topic}[{tp.partition}]@{offset}"
    reason = (f"record {where} cannot be read by the Kafka client ({exc}): a header key that is not UTF-8?"
              f" Its key and value are not kept here: read them at {where}")
    return Unreadable(tp.topic, tp.partition, offset, -1, 0, None, None, None, -1, -1, (), reason=reason)


Feed = Callable[[TopicPartition, list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def isolate(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], feed: Feed) -> None:
    """After a fetch failed with one of UNREADABLE_ERRORS: read each partition not read to
    its end on its own, feeding what reads; in the partition that fails, one record at a
    time up to the record that fails, which is fed as :class:`Unreadable` and skipped by
    the consumer."""
    paused = consumer.paused()
    behind = [tp for tp in partitions if tp not in paused]
    ends = await consumer.end_offsets(behind) if behind else {}
    for tp in behind:
        if await consumer.position(tp) >= ends.get(tp, 0):
            continue  # read to its end: not the one
        try:
            batches = await consumer.getmany(tp, timeout_ms=PROBE_WAIT_MS)
        except UNREADABLE_ERRORS:
            await _one_by_one(consumer, tp, feed)
            continue
        if batches.get(tp):
            await feed(tp, batches[tp])


async def _one_by_one(consumer: AIOKafkaConsumer, tp: TopicPartition, feed: Feed) -> None:
    while True:
        at = await consumer.position(tp)
        try:
            batches: dict[TopicPartition, Any] = await consumer.getmany(tp, timeout_ms=PROBE_WAIT_MS, max_records=1)
        except UNREADABLE_ERRORS as exc:
            record = unreadable(tp, at, exc)
        else:
            if not batches.get(tp):
                return  # nothing fetched in time: the next fetch that fails comes here again
            await feed(tp, batches[tp])
            continue
        log.error("%s; dead-lettering it", record.reason)
        await feed(tp, [record])
        consumer.seek(tp, at + 1)
        return
