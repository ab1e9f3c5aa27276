"""Records produced straight to kadence.requests with headers a Kafka client allows but no
Kadence producer writes (a header without a value, a traceparent that is not one): the
command applies once or is dead-lettered naming the header, and the shard goes on."""

from __future__ import annotations

import uuid
from typing import Any

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
