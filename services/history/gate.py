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
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.common import kafka

if TYPE_CHECKING:
    from .shard import Shard

log = logging.getLogger(__name__)

TICK_S = 0.05
QUIET_S = 1.0


class FetchGate:
    def __init__(self, consumer: AIOKafkaConsumer, shards: dict[int, Shard]) -> None:
        self._consumer = consumer
        self._shards = shards
        # Per partition: commands of this process queued for the broker and not acknowledged yet.
        self.in_flight: collections.Counter[int] = collections.Counter()
        self._seen: dict[int, int] = {}  # per partition, the log end at the previous look

    def fetch(self, partition: int) -> None:
        """Fetch the partition now: its shard needs a record that hand-over did not bring."""
        shard = self._shards.get(partition)
        tp = TopicPartition(kafka.REQUESTS, partition)
        if shard is not None and tp in self._consumer.paused():
            self._consumer.seek(tp, shard.consumed)
            self._consumer.resume(tp)

    def forget(self, partition: int) -> None:
        self._seen.pop(partition, None)

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
        for tp, end in ends.items():
            shard = self._shards.get(tp.partition)
            if shard is None or shard.lost.is_set() or tp not in assigned:
                continue
            seen, self._seen[tp.partition] = self._seen.get(tp.partition, 0), end
            if tp in paused:
                foreign = end > shard.consumed and self.in_flight[tp.partition] == 0 and shard.settled()
                if foreign or shard.consumed < seen:
                    self.fetch(tp.partition)
            elif end <= shard.consumed and now - shard.fetched_at >= QUIET_S:
                # The seek also drops copies the consumer fetched and has not returned yet.
                self._consumer.seek(tp, shard.consumed)
                self._consumer.pause(tp)
