"""A command record that is not on its workflow's partition (produced without a key, or
by a partitioner other than Kafka's murmur2, as kcat's default is) is dead-lettered with
the reason, and its sender told: otherwise another shard than the run's would write it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from kadence_protocol import avro
from services.common import kafka

from .history_harness import SHARDS, Topics, history_running, start_record

pytestmark = pytest.mark.timeout(120)


async def _runs(dsn: str, workflow_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM executions WHERE workflow_id = $1", workflow_id))
    finally:
        await conn.close()


async def test_a_start_on_another_shards_partition_or_without_a_key_is_dead_lettered(broker, fresh_dsn) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        wid = f"wf-{uuid.uuid4().hex[:8]}"
        key = kafka.workflow_key("default", wid)
        wrong = 1 - kafka.partition_for(key, SHARDS)
        elsewhere = start_record(wid)
        await io.producer.send_and_wait(kafka.REQUESTS, avro.encode("StartWorkflowExecution", elsewhere),
                                        key=key, partition=wrong)
        letter = await io.next(kafka.DLQ, "DeadLetter", timeout=15)
        assert f"is on partition {wrong}" in letter["reason"] and "murmur2" in letter["reason"]
        reply = await io.next(kafka.REPLIES, request_id=elsewhere["request_id"])
        assert not reply["ok"] and reply["error_type"] == "InvalidArgument"

        keyless = start_record(wid)
        await io.producer.send_and_wait(kafka.REQUESTS, avro.encode("StartWorkflowExecution", keyless),
                                        key=None, partition=wrong)
        letter = await io.next(kafka.DLQ, "DeadLetter", timeout=15)
        assert "record has no key" in letter["reason"]
        assert await _runs(fresh_dsn, wid) == 0

        good = start_record(wid)
        await io.send("StartWorkflowExecution", good)
        reply = await io.next(kafka.REPLIES, request_id=good["request_id"])
        assert reply["ok"] and reply["created"]
