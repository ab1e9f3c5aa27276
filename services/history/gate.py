"""Fetch commands only when hand-over leaves some to fetch (frontend and history in one process).

When a frontend runs in the history service's process, the commands it produces reach their
shard from the broker's acknowledgement (``HistoryService.take_queued``), and fetching them
again brings only copies to skip. Such fetches are not free: the broker reads the partition
for every fetch that returns records (the development broker lists every record batch the
partition holds, so its cost grows with the log), and this process decodes the copies. So a
partition whose shard has taken everything the broker holds is paused, and the gate asks
the broker for the log ends every ``TICK_S`` instead (a ListOffsets request reads no
records).

A paused partition resumes, from the shard's next offset, at once when its shard cannot take
a command handed over (its inbox is full, or another producer's record comes first), and
otherwise when a look finds a record the shard has not taken while none of this process's
commands is on its way to that shard (another producer's: a Kafka client, a frontend
elsewhere), or a record the previous look saw still untaken. So a command another producer
writes to a quiet partition waits up to ``TICK_S`` longer than under continuous fetching; a
partition that fetched another producer's records stays unpaused until ``QUIET_S`` after the
last of them, so a steady outside producer is fetched as before. The looks are requests too
(each costs the broker and this process about what an empty fetch does), hence a tick longer
than the in-process fetch wait. Every record is still taken once and in offset order: the gate
only decides when the consumer fetches, never what the shard takes.

The log end the gate goes by is the larger of the broker's answer and the offset after the
last command of this process the broker acknowledged on the partition. The development
broker (Tansu) answers ListOffsets with the base offset of the partition's last record
batch + 1, not the real end: a burst of commands goes out as one batch, so after 500
concurrent signals it said 5 while the log ended at 503. Hand-over had taken 68 of them and
dropped the rest (the inbox was full, and the partition was being fetched at that moment, so
nothing more to do); the gate then saw "end 5 <= taken 68" and paused the partition with 435
commands untaken, until another command came (a workflow task timing out, 12 s later).

A wait of that kind is logged at INFO: a partition whose known records stay untaken for
``STALL_LOG_S`` while its shard waits for work (``FetchGate.watch``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.common import kafka

log = logging.getLogger(__name__)

TICK_S = 0.05
QUIET_S = 1.0
STALL_LOG_S = 1.0  # known records untaken this long while the shard idles: say so, and fetch


class GatedShard(Protocol):
    """What the gate reads of a shard (shard.py, from its intake)."""

    @property
    def consumed(self) -> int: ...  # the next offset the shard takes

    @property
    def fetched_at(self) -> float: ...  # when it last took fetched records (monotonic)

    @property
    def lost(self) -> asyncio.Event: ...

    def settled(self) -> bool: ...  # it waits for work and none is queued


class FetchGate:
    def __init__(self, consumer: AIOKafkaConsumer, shards: Mapping[int, GatedShard]) -> None:
        self._consumer = consumer
        self._shards = shards
        # Per partition: commands of this process queued for the broker and not acknowledged yet.
        self.in_flight: collections.Counter[int] = collections.Counter()
        self._seen: dict[int, int] = {}  # per partition, the log end at the previous look
        # Per partition, the offset after the last command of this process the broker
        # acknowledged: a floor of the log end that the broker's own answer may fall below.
        # Kept across a release: the log does not shrink while this process runs.
        self.acked_end: dict[int, int] = {}
        # Per partition, a wait under way: since when (monotonic) records known to the gate
        # wait untaken with the shard idle, the shard's offset then, and whether it was logged.
        self._stalled: dict[int, tuple[float, int, bool]] = {}

    def acked(self, partition: int, offset: int) -> None:
        """The broker acknowledged a command of this process at ``offset``."""
        if offset + 1 > self.acked_end.get(partition, 0):
            self.acked_end[partition] = offset + 1

    def fetch(self, partition: int) -> None:
        """Fetch the partition now: its shard needs a record that hand-over did not bring."""
        shard = self._shards.get(partition)
        tp = TopicPartition(kafka.REQUESTS, partition)
        if shard is not None and tp in self._consumer.paused():
            self._consumer.seek(tp, shard.consumed)
            self._consumer.resume(tp)

    def forget(self, partition: int) -> None:
        self._seen.pop(partition, None)
        self._stalled.pop(partition, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            assigned = self._consumer.assignment()
            tps = [tp for p, shard in self._shards.items()
                   if not shard.lost.is_set() and (tp := TopicPartition(kafka.REQUESTS, p)) in assigned]
            if not tps:
                continue
            try:
                ends = await self._consumer.end_offsets(tps)
            except KafkaError as exc:
                log.warning("asking for the ends of %s failed (%r); fetching every partition meanwhile",
                            kafka.REQUESTS, exc)
                self._consumer.resume(*(tp for tp in tps if tp in self._consumer.paused()))
                self._seen.clear()
                await asyncio.sleep(0.5)
                continue
            self.look(ends, time.monotonic())

    def look(self, ends: dict[TopicPartition, int], now: float) -> None:
        """Pause or resume each partition for the log ends the broker just gave."""
        assigned, paused = self._consumer.assignment(), self._consumer.paused()
        for tp, broker_end in ends.items():
            shard = self._shards.get(tp.partition)
            if shard is None or shard.lost.is_set() or tp not in assigned:
                continue
            end = max(broker_end, self.acked_end.get(tp.partition, 0))
            seen, self._seen[tp.partition] = self._seen.get(tp.partition, 0), end
            self.watch(tp, end, now)
            if tp in paused:
                foreign = end > shard.consumed and self.in_flight[tp.partition] == 0 and shard.settled()
                if foreign or shard.consumed < seen:
                    self.fetch(tp.partition)
            elif end <= shard.consumed and now - shard.fetched_at >= QUIET_S:
                # The seek also drops copies the consumer fetched and has not returned yet.
                self._consumer.seek(tp, shard.consumed)
                self._consumer.pause(tp)

    def watch(self, tp: TopicPartition, end: int, now: float) -> None:
        """Log at INFO, once per episode, and fetch, when records up to ``end`` have waited
        untaken for ``STALL_LOG_S`` while the partition's shard had nothing to do."""
        shard = self._shards[tp.partition]
        if end <= shard.consumed or not shard.settled():
            self._stalled.pop(tp.partition, None)
            return
        since, at, logged = self._stalled.get(tp.partition, (now, shard.consumed, False))
        if at != shard.consumed:  # it took records since: a new wait, if any
            since, at, logged = now, shard.consumed, False
        self._stalled[tp.partition] = (since, at, logged)
        if logged or now - since < STALL_LOG_S:
            return
        self._stalled[tp.partition] = (since, at, True)
        log.info("shard %d: records %d..%d of %s wait untaken for %.1f s while the shard is idle"
                 " (partition %s); fetching", tp.partition, shard.consumed, end - 1, kafka.REQUESTS, now - since,
                 "paused" if tp in self._consumer.paused() else "fetching")
        self.fetch(tp.partition)
