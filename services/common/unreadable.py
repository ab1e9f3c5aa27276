"""Records that the Kafka client cannot read at all.

Kafka's protocol carries any bytes as a header key, but aiokafka reads header keys as
UTF-8 and raises while unpacking a fetch that holds one that is not: a producer speaking
the protocol itself (the Java client cannot write such a key) would make every fetch of
its partition fail, for ever. Such a record is found by reading the failing partition one
record at a time, and handed on as an :class:`Unreadable` record: history's shard and
matching dead-letter it (their stored offsets move past it, the partition goes on); the
visibility projection (consumer.py, and the faust apps through faust_app.py), the stream
audit and the frontend's reply consumer skip it; the tools' finite reads (bounded.py:
``kadence audit``, ``kadence dlq list``) report it. Every one is logged here, naming it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
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
    reason = (f"{where}: the Kafka client cannot unpack it ({exc}): a header key that is not UTF-8, in it"
              f" or in a record before it in its batch; its key and value are not kept here: read them at {where}")
    return Unreadable(tp.topic, tp.partition, offset, -1, 0, None, None, None, -1, -1, (), reason=reason)


Feed = Callable[[TopicPartition, list[ConsumerRecord[bytes, bytes]]], Awaitable[None]]


async def isolate(consumer: AIOKafkaConsumer, given: Mapping[TopicPartition, int], feed: Feed) -> bool:
    """After a fetch failed with one of UNREADABLE_ERRORS: read each partition on its own,
    feeding what reads; in the partition that fails, one record at a time up to the record
    that fails, which is fed as :class:`Unreadable` and skipped by the consumer. Says
    whether it found one (not when the failing partition is not among ``given``).

    ``given``: each partition's offset after the last record the caller was given. The
    failed fetch had taken the records of the partitions it drained before the failing one,
    moving their positions past records the caller never got: each partition is read again
    from there (a record given twice is the caller's to drop, a record skipped is lost).
    """
    for tp, offset in given.items():
        consumer.seek(tp, offset)
    paused = consumer.paused()
    behind = [tp for tp in given if tp not in paused]
    ends = await consumer.end_offsets(behind) if behind else {}
    found = False
    for tp in behind:
        # The failed fetch learnt the high watermark: some brokers answer end_offsets short.
        end = max(ends.get(tp, 0), consumer.highwater(tp) or 0)
        if given[tp] >= end:
            continue  # read to its end: not the one
        try:
            batches = await consumer.getmany(tp, timeout_ms=PROBE_WAIT_MS)
        except UNREADABLE_ERRORS:
            found = await _one_by_one(consumer, tp, feed) or found
            continue
        if batches.get(tp):
            await feed(tp, batches[tp])
    return found


async def _one_by_one(consumer: AIOKafkaConsumer, tp: TopicPartition, feed: Feed) -> bool:
    """Read ``tp`` a record at a time up to the records it cannot unpack, and one past them.

    aiokafka unpacks every record of a fetched batch, those before the position too, so
    the records after an unreadable one in its batch (written by the same producer, in the
    same request) fail as well: each is handed on as Unreadable, until one reads."""
    skipped = False
    while True:
        at = await consumer.position(tp)
        try:
            batches: dict[TopicPartition, Any] = await consumer.getmany(tp, timeout_ms=PROBE_WAIT_MS, max_records=1)
        except UNREADABLE_ERRORS as exc:
            batches = {tp: [unreadable(tp, at, exc)]}
            log.error("%s; handing it on as unreadable", batches[tp][0].reason)  # noqa: TRY400 - no traceback to show
            await feed(tp, batches[tp])
            consumer.seek(tp, at + 1)
            skipped = True
            continue
        if not batches.get(tp):
            return skipped  # nothing fetched in time: the next fetch that fails comes here again
        await feed(tp, batches[tp])
        if skipped:
            return True
