"""Records produced straight to kadence.requests with headers a Kafka client allows but no
Kadence producer writes (a header without a value, a traceparent that is not one): the
command applies once or is dead-lettered naming the header, and the shard goes on."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest

from kadence_protocol import avro
from services.common import kafka

from .history_harness import SHARDS, Topics, history_running, start_record, until
from .raw_records import UNREADABLE, RawKey, raw_producer

pytestmark = pytest.mark.timeout(120)

PROMPTLY = 10.0


@pytest.mark.parametrize("headers", [
    [("traceparent", None)],
    [("tracestate", None), ("traceparent", b"00-garbage")],
    [("traceparent", b"\xff\xfe not utf-8")],
])
async def test_a_start_with_null_or_garbage_trace_headers_is_taken_and_the_shard_goes_on(
        broker: Any, fresh_dsn: str, headers: list[tuple[str, bytes | None]]) -> None:
    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        wid = f"wf-{uuid.uuid4().hex[:8]}"
        odd = start_record(wid)
        await io.producer.send_and_wait(kafka.REQUESTS, avro.encode("StartWorkflowExecution", odd),
                                        key=kafka.workflow_key("default", wid), headers=headers)
        reply = await io.next(kafka.REPLIES, request_id=odd["request_id"], timeout=PROMPTLY)
        assert reply["ok"] and reply["created"]

        after = start_record(f"{wid}-after")
        await io.send("StartWorkflowExecution", after)
        reply = await io.next(kafka.REPLIES, request_id=after["request_id"], timeout=PROMPTLY)
        assert reply["ok"] and reply["created"]


def _ids_off(partition: int, prefix: str, count: int) -> list[str]:
    """Workflow ids of the default namespace whose records are not on ``partition``."""
    ids = (f"{prefix}-{n}" for n in range(10 * count))
    return [w for w in ids if kafka.partition_for(kafka.workflow_key("default", w), SHARDS) != partition][:count]


async def test_a_record_with_a_header_key_that_is_not_utf8_is_dead_lettered_and_the_shard_goes_on(
        broker: Any, fresh_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    # On the last partition: aiokafka hands a fetch's partitions over in order, so the records
    # of the other are taken before the unreadable one fails the fetch.
    wid = next(w for w in (f"wf-{uuid.uuid4().hex[:8]}" for _ in range(1000))
               if kafka.partition_for(kafka.workflow_key("default", w), SHARDS) == SHARDS - 1)
    key = kafka.workflow_key("default", wid)
    partition = SHARDS - 1
    before, odd, after = start_record(wid), start_record(wid), start_record(wid)
    # Starts on the other shard, in the same first fetch as the unreadable record: none may be lost.
    others = [start_record(w) for w in _ids_off(partition, f"{wid}-o", 40)]
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    # The pure-Python batch builder writes what the key's encode() gives.
    for module in (message_accumulator, producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
    raw = kafka.new_producer(broker.bootstrap)
    await raw.start()
    try:
        sent = [await raw.send(kafka.REQUESTS, avro.encode("StartWorkflowExecution", other),
                               key=kafka.workflow_key("default", other["workflow_id"]))
                for other in others]
        # One batch: the good record ahead of the unreadable one comes in the same fetch.
        sent += [await raw.send(kafka.REQUESTS, avro.encode("StartWorkflowExecution", before), key=key),
                 await raw.send(kafka.REQUESTS, avro.encode("StartWorkflowExecution", odd), key=key,
                                headers=[(RawKey("x"), b"v")])]
        bad = (await sent[-1]).offset
        for future in sent:
            await future
    finally:
        await raw.stop()
    monkeypatch.undo()

    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        for other in others:
            reply = await io.next(kafka.REPLIES, request_id=other["request_id"], timeout=PROMPTLY)
            assert reply["ok"] and reply["created"]
        reply = await io.next(kafka.REPLIES, request_id=before["request_id"], timeout=PROMPTLY)
        assert reply["ok"] and reply["created"]
        letter = await io.next(kafka.DLQ, "DeadLetter", timeout=PROMPTLY)
        assert letter["offset"] == bad and "cannot unpack" in letter["reason"]
        assert f"{kafka.REQUESTS}[{partition}]@{bad}" in letter["reason"]

        await io.send("StartWorkflowExecution", after)
        reply = await io.next(kafka.REPLIES, request_id=after["request_id"], timeout=PROMPTLY)
        assert reply["error_type"] == "WorkflowAlreadyStarted"  # `before` started the run, once
        conn = await asyncpg.connect(fresh_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM executions WHERE workflow_id = $1", wid) == 1
        finally:
            await conn.close()


async def test_isolating_an_unreadable_record_loses_none_of_the_records_fetched_with_it(
        broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka hands a fetch's partitions over in turn: those before the failing one are
    taken (their positions move) and lost with the exception; they must be read again."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    from services.common import unreadable

    topic = kafka.REQUESTS  # made with two partitions by ensure_topics; nothing else reads it here
    admin_producer = kafka.new_producer(broker.bootstrap)
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    for module in (message_accumulator, producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
    await admin_producer.start()
    try:
        sent = [await admin_producer.send(topic, f"good-{i}".encode(), partition=0) for i in range(30)]
        sent += [await admin_producer.send(topic, b"ahead", partition=1),
                 await admin_producer.send(topic, b"odd", partition=1, headers=[(RawKey("x"), b"v")]),
                 await admin_producer.send(topic, b"behind", partition=1)]
        for future in sent:
            await future
        await admin_producer.send_and_wait(topic, b"later", partition=1)  # a batch of its own
    finally:
        await admin_producer.stop()
    monkeypatch.undo()

    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    fed: list[tuple[int, int, bytes | None]] = []

    async def feed(tp: TopicPartition, records: list[Any]) -> None:
        fed.extend((r.partition, r.offset, r.value) for r in records)

    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        given = {tp: 0 for tp in tps}

        async def failed() -> bool:
            try:
                for tp, records in (await consumer.getmany(*tps, timeout_ms=500)).items():
                    await feed(tp, records)
                    given[tp] = records[-1].offset + 1
            except unreadable.UNREADABLE_ERRORS:
                return True
            return False
        await until(failed, seconds=20)
        await unreadable.isolate(consumer, given, feed)
        # What is left reads without failing.
        async def rest() -> bool:
            for tp, records in (await consumer.getmany(*tps, timeout_ms=200)).items():
                await feed(tp, records)
            return len(fed) >= 34
        await until(rest, seconds=20)
    finally:
        await consumer.stop()
    assert sorted(o for p, o, _ in fed if p == 0) == list(range(30))
    # The record after the unreadable one in its batch cannot be unpacked either (aiokafka
    # unpacks a batch whole); the next batch reads.
    assert sorted((o, v) for p, o, v in fed if p == 1) == [(0, b"ahead"), (1, None), (2, None), (3, b"later")]


async def test_the_audit_reports_an_unreadable_record_on_kadence_history_and_reads_on(
        broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kadence audit`` stopped with a traceback (exit 1, as if the log diverged) at a record
    of kadence.history it could not unpack, even one at the very end (its end-offset probe)."""
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    from services.history.audit.replay import Replay
    from services.history.audit.source import read_history

    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    for module in (message_accumulator, producer):
        monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
    raw = kafka.new_producer(broker.bootstrap)
    await raw.start()
    try:
        await raw.send_and_wait(kafka.HISTORY, b"\x00junk", key=b"default/x", partition=0)
        odd = await raw.send_and_wait(kafka.HISTORY, b"\x00junk", key=b"default/x", partition=0,
                                      headers=[(RawKey("x"), b"v")])
    finally:
        await raw.stop()
    monkeypatch.undo()

    found = await asyncio.wait_for(read_history(broker.bootstrap, Replay()), 60)
    assert len(found) == 2 and "shorter than" in found[0]
    assert f"{kafka.HISTORY}[0]@{odd.offset}: the Kafka client cannot unpack it" in found[1]


async def test_dlq_list_lists_an_unreadable_record_of_kadence_dlq_and_reads_on(
        broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kadence dlq list`` left a record of kadence.dlq it could not unpack out without a word."""
    from services.common import dlq

    def letter(n: int) -> bytes:
        return kafka.dead_letter(source_topic=kafka.REQUESTS, partition=0, offset=n, key=b"k", value=b"v",
                                 reason=f"letter {n}")

    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    async with raw_producer(broker.bootstrap, monkeypatch) as raw:
        await raw.send_and_wait(kafka.DLQ, letter(1), key=b"k")
        odd = await raw.send_and_wait(kafka.DLQ, letter(2), key=b"k", headers=UNREADABLE)
        await raw.send_and_wait(kafka.DLQ, letter(3), key=b"k")

    entries = await asyncio.wait_for(dlq.list_dead_letters(broker.bootstrap), 60)
    assert [e.reason for e in entries][0::2] == ["letter 1", "letter 3"]
    assert entries[1].dlq_offset == odd.offset and entries[1].source_topic == "?"
    assert f"{kafka.DLQ}[0]@{odd.offset}: the Kafka client cannot unpack it" in entries[1].reason
    # Nothing of it to re-drive: re-driving everything takes the two letters only.
    assert [e.reason for e in await asyncio.wait_for(dlq.redrive(broker.bootstrap), 60)] == ["letter 1", "letter 3"]


async def test_the_frontends_reply_consumer_reads_past_an_unreadable_record(
        broker: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The frontend's reply consumer died on it (the frontend stopped), and again on restart:
    it started at the end, but the record stays there until a reply follows it."""
    from services.common.supervision import Fatal
    from services.frontend.replies import ReplyRouter

    def reply(request_id: str) -> bytes:
        return avro.encode("Reply", {"reply_to": "fe-1", "request_id": request_id, "ok": True, "run_id": "r"})

    caplog.set_level(logging.ERROR, "services.common.unreadable")
    await kafka.ensure_topics(broker.bootstrap, SHARDS, 2)
    router, fatal = ReplyRouter(broker.bootstrap, "fe-1"), Fatal()
    await router.start(fatal)
    try:
        answers = [router.expect(f"req-{n}") for n in range(3)]
        async with raw_producer(broker.bootstrap, monkeypatch) as raw:
            await raw.send_and_wait(kafka.REPLIES, reply("req-0"), key=b"fe-1")
            odd = await raw.send_and_wait(kafka.REPLIES, reply("req-1"), key=b"fe-1", headers=UNREADABLE)
            await raw.send_and_wait(kafka.REPLIES, reply("req-2"), key=b"fe-1")
        for n in (0, 2):
            assert (await asyncio.wait_for(answers[n], PROMPTLY))["request_id"] == f"req-{n}"
        assert not fatal.happened.is_set(), fatal.reason
        assert not answers[1].done()  # what the record held is lost, its caller times out
        assert f"{kafka.REPLIES}[{odd.partition}]@{odd.offset}: the Kafka client cannot unpack it" in caplog.text
    finally:
        await router.stop()
