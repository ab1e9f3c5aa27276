"""The faust app of Kadence's stream processes (the visibility app, the stream audit): faust's
own, whose Kafka consumer reads past a record the client cannot unpack (unreadable.py).

faust fetches in a consumer thread of its own and lets whatever the fetch raises stop the
worker: such a record on a topic the app reads stopped it, and again at every restart. Here
the fetch that fails hands the partitions to :func:`unreadable.isolate`, from the offset faust
last read in each (a record given again is dropped or harmless to both apps: the store and
the audit take a repeat as a redelivery); the record comes to the agent with no value, which
both apps report as a record that is not a HistoryRecord.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as driver

from . import unreadable

__all__ = ["App"]


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    async def _fetch_records(self, consumer: AIOKafkaConsumer, active_partitions: set[Any],
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        try:
            return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                                max_records=max_records)
        except unreadable.UNREADABLE_ERRORS:
            return await self._isolate(consumer, active_partitions)

    async def _isolate(self, consumer: AIOKafkaConsumer,
                       active_partitions: set[Any]) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        # faust's read offset is the offset of the last record it took (or, just assigned, the
        # committed one); reading from it gives that record again, never skips one.
        read_offsets = self.consumer._read_offset
        given: dict[TopicPartition, int] = {}
        for tp in active_partitions or consumer.assignment():
            tp = TopicPartition(tp.topic, tp.partition)
            offset = read_offsets.get(tp)
            if offset is None:
                offset = await consumer.committed(tp)
            if offset is None:
                offset = (await consumer.beginning_offsets([tp]))[tp]
            given[tp] = offset
        found: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}

        async def take(tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
            found.setdefault(tp, []).extend(records)

        if not await unreadable.isolate(consumer, given, take):
            await asyncio.sleep(0.1)  # the partition slow to answer: no busy loop meanwhile
        return found


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App reading through :class:`_Transport` (``kafka://`` brokers only, as Kadence's)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
