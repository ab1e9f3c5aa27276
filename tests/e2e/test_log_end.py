"""The development broker reports a partition's end as its last batch's base + 1: a shard
read to the end is not "past the log end" there, and history neither warns nor rewinds."""

from __future__ import annotations

import asyncio
import functools
import logging

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kadence import Client, Worker
from services.cluster import Cluster
from services.common import kafka
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker
from services.history.log_end import serves_record_before
from tests.helpers import eventually

from .workflows import EchoWorkflow, echo

pytestmark = pytest.mark.timeout(120)


async def test_the_record_before_tells_a_batch_base_end_from_a_lost_log(broker: EmbeddedBroker) -> None:
    topic = "log-end-check"
    await kafka.ensure_topics(broker.bootstrap, 1, 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x", partition=0) for _ in range(10)]  # one batch
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    assert await serves_record_before(broker.bootstrap, None, tp, 10)  # read to the end
    assert not await serves_record_before(broker.bootstrap, None, tp, 15, timeout_ms=500)  # really past


async def _stored_offsets_are(conn: asyncpg.Connection, ends: dict[int, int]) -> bool:
    rows = await conn.fetch("SELECT shard_id, kafka_offset FROM shards")
    return {r["shard_id"]: r["kafka_offset"] for r in rows} == ends


async def _reported_ends(broker: EmbeddedBroker, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(kafka.REQUESTS, p) for p in range(partitions)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def _batch_to_each_partition(broker: EmbeddedBroker, partitions: int) -> dict[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
    await producer.start()
    try:
        ends = {}
        for p in range(partitions):
            batch = producer.create_batch()  # one record batch of 5, whatever the producer's timing
            for _ in range(5):
                batch.append(key=b"default/x", value=b"not a command", timestamp=None)
            batch.close()
            sent = await (await producer.send_batch(batch, kafka.REQUESTS, partition=p))
            ends[p] = sent.offset + 5  # the batch's base offset is acknowledged
    finally:
        await producer.stop()
    return ends


async def test_a_restart_on_the_development_broker_does_not_warn_of_a_lost_partition(
        broker: EmbeddedBroker, fresh_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    for round_ in range(2):  # the second start takes the shards over at their stored offsets
        async with Cluster(settings) as cluster:
            client = await Client.connect(cluster.url, namespace="default")
            try:
                async with Worker(client, task_queue="q-log-end", workflows=[EchoWorkflow], activities=[echo]):
                    results = await asyncio.gather(*(client.execute_workflow(
                        EchoWorkflow.run, f"v{i}", id=f"log-end-{round_}-{i}", task_queue="q-log-end")
                        for i in range(8)))
                    assert results == [f"v{i}" for i in range(8)]
                if round_ == 0:
                    # End each partition with a batch of several records (unreadable ones: history
                    # dead-letters them and reads past), as a burst of commands would.
                    ends = await _batch_to_each_partition(broker, 2)
                    pool = await asyncpg.connect(fresh_dsn)
                    try:
                        await eventually(functools.partial(_stored_offsets_are, pool, ends), timeout=30,  # type: ignore[arg-type]
                                         what="history read both partitions to the end")
                    finally:
                        await pool.close()
                    reported = await _reported_ends(broker, 2)
                    assert any(reported[p] < ends[p] for p in ends), (reported, ends)  # the case at hand
            finally:
                await client.close()
        caplog.set_level(logging.INFO, logger="services.history.service")
    past = [r.getMessage() for r in caplog.records if "past the" in r.getMessage()]
    assert not past, past
