"""The kadence.requests trimmer (services/history/trim.py) on the real development broker
and PostgreSQL: what it asks to delete comes from the stored offsets only, and the broker's
refusal (Tansu 0.6.0's memory storage closes the connection on DeleteRecords) is said once,
after which nothing is asked and the shards carry on."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from services.common import db, kafka
from services.common.embedded import EmbeddedBroker, free_port
from services.history import HistoryService
from services.history.trim import CLOSED_IN_A_ROW, RequestTrimmer

from .history_harness import SHARDS, Topics, settings_for, start_record, until

pytestmark = pytest.mark.timeout(120)

PANIC = b"not yet implemented"  # Tansu's todo!() in its memory storage's delete_records


@pytest.fixture
async def logged_broker(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, Path]]:
    log_path = tmp_path / "broker.log"
    b = await EmbeddedBroker.start(log_path=log_path)
    try:
        yield b, log_path
    finally:
        b.stop()


async def _shards(dsn: str, offsets: dict[int, int]) -> None:
    await db.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany("INSERT INTO shards (shard_id, range_id, kafka_offset) VALUES ($1, 1, $2)",
                               list(offsets.items()))
    finally:
        await conn.close()


async def _produce(bootstrap: str, per_partition: int) -> None:
    await kafka.ensure_topics(bootstrap, SHARDS, 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(SHARDS):
            for i in range(per_partition):
                await producer.send_and_wait(kafka.REQUESTS, b"r%d" % i, partition=p)
    finally:
        await producer.stop()


async def _offsets_served(bootstrap: str, partition: int) -> list[int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(kafka.REQUESTS, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got: list[int] = []
        while len(got) < 10:
            batch = await consumer.getmany(tp, timeout_ms=2000)
            if not batch:
                break
            got += [r.offset for r in batch.get(tp, [])]
        return got
    finally:
        await consumer.stop()


async def test_only_partitions_whose_offset_postgresql_holds_are_planned_and_never_past_it(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    await _shards(fresh_dsn, {0: 7, 1: 1})  # shard 2's row is missing: its offset is unknown
    pool = await db.create_pool(fresh_dsn)
    trimmer = RequestTrimmer(pool, lambda: {0: 1, 1: 1, 2: 1}, broker.bootstrap, keep_s=0)
    try:
        assert await trimmer.plan() == {0: 6}  # offset 6, the one before the stored 7, stays
        await pool.execute("UPDATE shards SET kafka_offset = 3 WHERE shard_id = 0")  # a rewind
        assert await trimmer.plan() == {0: 2}
        assert await RequestTrimmer(pool, dict, broker.bootstrap, keep_s=0).plan() == {}  # owns nothing
    finally:
        await trimmer.close()
        await pool.close()


async def test_the_development_broker_refusal_is_said_once_and_nothing_is_asked_after(
        logged_broker: tuple[EmbeddedBroker, Path], fresh_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    broker, log_path = logged_broker
    await _shards(fresh_dsn, {0: 8, 1: 8})
    await _produce(broker.bootstrap, 10)
    pool = await db.create_pool(fresh_dsn)
    trimmer = RequestTrimmer(pool, lambda: {0: 1, 1: 1}, broker.bootstrap, keep_s=0)
    caplog.set_level(logging.WARNING, logger="services.history.trim")
    try:
        for _ in range(CLOSED_IN_A_ROW + 3):
            await trimmer.round()
    finally:
        await trimmer.close()
        await pool.close()
    assert trimmer.unsupported is not None and "closes the connection" in trimmer.unsupported
    said = [r for r in caplog.records if r.name == "services.history.trim"]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert log_path.read_bytes().count(PANIC) == CLOSED_IN_A_ROW  # asked twice, then never
    assert broker.process.poll() is None
    assert await _offsets_served(broker.bootstrap, 0) == list(range(10))  # nothing lost either


async def test_a_broker_that_does_not_answer_is_retried_not_given_up(fresh_dsn: str) -> None:
    await _shards(fresh_dsn, {0: 8})
    pool = await db.create_pool(fresh_dsn)
    trimmer = RequestTrimmer(pool, lambda: {0: 1}, f"127.0.0.1:{free_port()}", keep_s=0)
    try:
        with pytest.raises(KafkaConnectionError):  # periodic.py logs it and tries again later
            await trimmer.round()
        assert trimmer.unsupported is None
    finally:
        await trimmer.close()
        await pool.close()


async def test_the_shards_carry_on_once_the_trimmer_has_given_up(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    service = HistoryService(settings_for(broker.bootstrap, fresh_dsn, trim_interval_s=1, trim_keep_s=0))
    await service.start()
    try:
        async with Topics(broker.bootstrap) as io:
            for _ in range(2 * SHARDS + 1):  # one shard at least has applied 3: its offset 1 can go
                first = start_record(f"trim-{uuid.uuid4().hex[:6]}")
                await io.send("StartWorkflowExecution", first)
                assert (await io.next("kadence.replies", request_id=first["request_id"]))["ok"]
            assert service.trimmer is not None
            await until(lambda: service.trimmer is not None and service.trimmer.unsupported is not None, seconds=30)
            later = start_record(f"trim-{uuid.uuid4().hex[:6]}")
            await io.send("StartWorkflowExecution", later)
            assert (await io.next("kadence.replies", request_id=later["request_id"]))["ok"]
        assert service.fatal.reason is None
    finally:
        await service.stop()


async def test_an_interval_of_0_runs_no_trimmer(broker: EmbeddedBroker, fresh_dsn: str) -> None:
    await db.migrate(fresh_dsn)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    service = HistoryService(settings_for(broker.bootstrap, fresh_dsn, trim_interval_s=0))
    await service.start()
    try:
        assert service.trimmer is None
        assert not [job for job in service._jobs if job.get_name() == "history-trim"]
    finally:
        await service.stop()
