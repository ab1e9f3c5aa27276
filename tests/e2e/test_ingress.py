"""Kafka-native ingress and dead letters: commands produced by a plain aiokafka producer,
not the frontend, against the whole Kadence on a real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kadence import Client, Worker
from kadence import kafka as ingress
from services.cluster import Cluster
from services.common import dlq as dead_letters
from services.common.bounded import BoundedRead
from tests.helpers import eventually

from .workflows import ALL_ACTIVITIES, ALL_WORKFLOWS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    """This module's tests share one cluster (tests/e2e/conftest.py module_cluster): each uses its
    own workflow ids, task queue and reply key; only the last one puts records in kadence.dlq."""
    return module_cluster


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _reply(bootstrap: str, reply_to: str, request_id: str, timeout: float = 15.0) -> ingress.Reply:
    """Read kadence.replies as any outside consumer would, until our reply shows up."""
    consumer = AIOKafkaConsumer(ingress.REPLIES, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        async def find() -> ingress.Reply:
            async for record in consumer:
                if record.key == reply_to.encode() and record.value is not None:
                    reply = ingress.decode_reply(record.value)
                    if reply.request_id == request_id:
                        return reply
            raise AssertionError("the reply stream ended")
        return await asyncio.wait_for(find(), timeout)
    finally:
        await consumer.stop()


async def test_a_plain_producer_starts_a_workflow_that_completes(cluster: Cluster, client: Client) -> None:
    bootstrap = cluster.settings.kafka_bootstrap
    wid = _id("kafka-start")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        # EchoWorkflow (tests/e2e/workflows.py) returns what its activity echoes.
        value = ingress.encode_start("default", wid, "EchoWorkflow", "q-ingress", ["from kafka"],
                                     request_id="req-1", reply_to="me")
        await producer.send_and_wait("kadence.requests", value, key=f"default/{wid}".encode())
    finally:
        await producer.stop()
    reply = await _reply(bootstrap, "me", "req-1")
    assert reply.ok and reply.run_id and reply.workflow_id == wid
    async with Worker(client, task_queue="q-ingress", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES):
        assert await client.get_workflow_handle(wid).result(timeout=20) == "from kafka"


async def test_a_signal_produced_to_kafka_unblocks_a_waiting_workflow(cluster: Cluster, client: Client) -> None:
    wid = _id("kafka-signal")
    async with (Worker(client, task_queue="q-ingress-sig", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES),
                ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka):
        started = await kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-ingress-sig")
        assert started.ok
        signalled = await kafka.signal_workflow("default", wid, "approve", ["kafka"])
        assert signalled.ok and signalled.run_id == started.run_id
        assert await client.get_workflow_handle(wid).result(timeout=20) == "approved by kafka"
        # Signal-with-start on a closed workflow starts a new run that takes the signal.
        again = await kafka.signal_with_start("default", wid, "ApprovalWorkflow", "q-ingress-sig",
                                              "approve", ["again"])
        assert again.ok and again.run_id != started.run_id
        assert await client.get_workflow_handle(wid).result(timeout=20) == "approved by again"


async def test_a_rejected_start_is_answered_with_the_reason(cluster: Cluster) -> None:
    wid = _id("kafka-dup")
    async with ingress.KafkaIngress(cluster.settings.kafka_bootstrap) as kafka:
        first = await kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-nobody")
        second = await kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-nobody")
        missing = await kafka.signal_workflow("default", _id("nobody"), "approve", ["x"])
    assert first.ok
    assert not second.ok and second.error_type == "WorkflowAlreadyStarted" and second.run_id == first.run_id
    assert wid in (second.error_message or "")
    assert not missing.ok and missing.error_type == "WorkflowNotFound"


async def test_garbage_goes_to_the_dlq_later_records_flow_and_the_tool_redrives_it(cluster: Cluster) -> None:
    bootstrap = cluster.settings.kafka_bootstrap
    wid = _id("kafka-dlq")
    key = f"default/{wid}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("kadence.requests", b"\x00not avro at all", key=key)
        unknown = b"\xc3\x01" + b"\x11" * 8 + b"body"  # right marker, fingerprint of no schema
        await producer.send_and_wait("kadence.requests", unknown, key=key)
    finally:
        await producer.stop()
    async with ingress.KafkaIngress(bootstrap) as kafka:  # a later record on the same partition
        assert (await kafka.start_workflow("default", wid, "ApprovalWorkflow", "q-nobody")).ok

    letters = await dead_letters.list_dead_letters(bootstrap)
    assert [(e.value, e.key) for e in letters] == [(b"\x00not avro at all", key), (unknown, key)]
    assert "undecodable" in letters[0].reason and "unknown schema" in letters[1].reason
    assert letters[0].source_topic == "kadence.requests" and letters[1].offset == letters[0].offset + 1
    assert [e.dlq_offset for e in await dead_letters.list_dead_letters(bootstrap, limit=1)] == [0]

    redriven = await dead_letters.redrive(bootstrap, offsets={letters[0].dlq_offset})
    assert [e.dlq_offset for e in redriven] == [letters[0].dlq_offset]
    # The original bytes are back on kadence.requests under the original key ...
    async with BoundedRead(bootstrap, "kadence.requests") as read:
        copies = [r async for r in read if r.value == b"\x00not avro at all"]
    assert len(copies) == 2 and all(r.key == key for r in copies)
    assert dict(copies[1].headers)["kadence-redriven-from"] == b"kadence.dlq[0]@0"
    # ... and, still garbage, they land in the DLQ once more while nothing stops.
    async def three_letters() -> list[dead_letters.DeadLetterEntry] | None:
        letters = await dead_letters.list_dead_letters(bootstrap)
        return letters if len(letters) == 3 else None
    letters = await eventually(three_letters, what="the re-driven garbage dead-lettered again")
    assert letters[2].value == b"\x00not avro at all" and letters[2].offset == copies[1].offset
