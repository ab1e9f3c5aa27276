"""Records produced straight to kadence.requests with headers a Kafka client allows but no
Kadence producer writes (a header without a value, a traceparent that is not one): the
command applies once or is dead-lettered naming the header, and the shard goes on."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from kadence_protocol import avro
from services.common import kafka

from .history_harness import Topics, history_running, start_record

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


class _RawKey(str):
    """A header key whose bytes are not UTF-8: Kafka's protocol carries any bytes there, and
    a producer written against it (not the Java client) may send them."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-key"


async def test_a_record_with_a_header_key_that_is_not_utf8_is_dead_lettered_and_the_shard_goes_on(
        broker: Any, fresh_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record import default_records

    async with history_running(broker.bootstrap, fresh_dsn), Topics(broker.bootstrap) as io:
        wid = f"wf-{uuid.uuid4().hex[:8]}"
        key = kafka.workflow_key("default", wid)
        before, odd, after = start_record(f"{wid}"), start_record(wid), start_record(wid)
        # The pure-Python batch builder writes what the key's encode() gives.
        for module in (message_accumulator, producer):
            monkeypatch.setattr(module, "DefaultRecordBatchBuilder", default_records._DefaultRecordBatchBuilderPy)
        raw = kafka.new_producer(broker.bootstrap)
        await raw.start()
        try:
            # One batch: the good record ahead of the unreadable one comes in the same fetch.
            sent = [await raw.send(kafka.REQUESTS, avro.encode("StartWorkflowExecution", before), key=key),
                    await raw.send(kafka.REQUESTS, avro.encode("StartWorkflowExecution", odd), key=key,
                                   headers=[(_RawKey("x"), b"v")])]
            bad = (await sent[1]).offset
            await sent[0]
        finally:
            await raw.stop()
        monkeypatch.undo()

        reply = await io.next(kafka.REPLIES, request_id=before["request_id"], timeout=PROMPTLY)
        assert reply["ok"] and reply["created"]
        letter = await io.next(kafka.DLQ, "DeadLetter", timeout=PROMPTLY)
        assert letter["offset"] == bad and "cannot be read" in letter["reason"]
        assert f"{kafka.REQUESTS}[{kafka.partition_for(key, 2)}]@{bad}" in letter["reason"]

        await io.send("StartWorkflowExecution", after)
        reply = await io.next(kafka.REPLIES, request_id=after["request_id"], timeout=PROMPTLY)
        assert reply["error_type"] == "WorkflowAlreadyStarted"  # `before` started the run, once
        conn = await asyncpg.connect(fresh_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM executions WHERE workflow_id = $1", wid) == 1
        finally:
            await conn.close()
