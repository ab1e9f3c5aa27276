"""Visibility in one process takes what the outbox relays published from them, not from a
fetch (services/visibility/handover.py), and the offset stored in Kafka stays the truth: a
crash after the hand-over and before the write and offset commit loses nothing, and a
record no relay here handed over (another process's) is fetched."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from kadence import Client, Worker
from kadence_protocol import avro
from services.cluster import Cluster
from services.common.kafka import HISTORY, Published
from services.visibility.consumer import GROUP, VisibilityConsumer, _Run
from services.visibility.handover import Handover
from tests.helpers import eventually

from .test_visibility import VisOrder

pytestmark = pytest.mark.timeout(120)

ROW = "SELECT status, history_length FROM visibility WHERE workflow_id = $1"


async def _run_one(client: Client, tag: str) -> None:
    async with Worker(client, task_queue=f"ho-{tag}", workflows=[VisOrder]):
        await client.execute_workflow(VisOrder.run, 1, id=f"ho-{tag}", task_queue=f"ho-{tag}")


async def test_handed_records_are_projected_and_their_partitions_not_fetched(client: Client,
                                                                            cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    await _run_one(client, tag)
    assert cluster.pool is not None and cluster.visibility.handover is not None
    await eventually(lambda: cluster.pool.fetchrow(ROW, f"ho-{tag}"), timeout=30, what="the row")
    row = await eventually(lambda: _closed(cluster, f"ho-{tag}"), timeout=30, what="the closed row")
    assert row["status"] == "Completed"
    assert cluster.visibility.handover.handed >= row["history_length"]
    # Every partition the run's records went to is caught up from the hand-over and not fetched.
    assert cluster.visibility._consumer.paused()
    await eventually(lambda: not any(cluster.visibility.lag().values()), timeout=30, what="no lag")


async def _closed(cluster: Cluster, workflow_id: str) -> object:
    assert cluster.pool is not None
    row = await cluster.pool.fetchrow(ROW, workflow_id)
    return row if row is not None and row["status"] != "Running" else None


async def test_a_crash_after_the_hand_over_loses_nothing(client: Client, cluster: Cluster,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop dies with handed records taken and neither written nor committed: the next
    consumer of the group fetches them from the offset stored in Kafka."""
    tag = uuid.uuid4().hex[:6]
    assert cluster.pool is not None
    crashed: list[int] = []

    async def crash(runs: dict[TopicPartition, _Run]) -> None:
        crashed.extend(len(run.values) for run in runs.values() if run.handed)
        raise RuntimeError("a crash between the hand-over and the write")
    monkeypatch.setattr(cluster.visibility, "_project", crash)
    await _run_one(client, tag)
    await eventually(lambda: cluster.fatal.happened.is_set(), timeout=30, what="the crash")
    assert crashed, "the records were handed over before the crash"
    await cluster.visibility.stop()
    assert await cluster.pool.fetchrow(ROW, f"ho-{tag}") is None
    # The same group again, as after a restart: nothing is handed to it.
    again = VisibilityConsumer(cluster.settings.kafka_bootstrap, cluster.pool, group=GROUP,
                               session_timeout_ms=2000, handover=Handover())
    await again.start()
    try:
        row = await eventually(lambda: _closed(cluster, f"ho-{tag}"), timeout=30, what="the row, fetched")
        assert row["status"] == "Completed"
    finally:
        await again.stop()


async def test_a_record_nobody_handed_over_is_fetched(client: Client, cluster: Cluster) -> None:
    """Another producer's record in a partition the hand-over keeps up with (as another
    process's relay writes) is found by the look at the log ends and fetched."""
    tag = uuid.uuid4().hex[:6]
    await _run_one(client, tag)
    assert cluster.pool is not None
    await eventually(lambda: _closed(cluster, f"ho-{tag}"), timeout=30, what="the closed row")
    paused = await eventually(lambda: cluster.visibility._consumer.paused(), timeout=30, what="a paused partition")
    tp = sorted(paused)[0]
    # A copy of one of the run's records, of another run, written by a producer of its own.
    record = await _last_record(cluster, tp)
    foreign = f"other-{tag}"
    copy = _of_run(record, foreign)
    producer = AIOKafkaProducer(bootstrap_servers=cluster.settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(HISTORY, copy, key=record.key, partition=tp.partition)
    finally:
        await producer.stop()
    await eventually(lambda: cluster.pool.fetchrow(ROW, foreign), timeout=30, what="the foreign record's row")


async def test_a_partition_fetched_at_its_log_end_goes_over_to_the_hand_over(client: Client,
                                                                             cluster: Cluster) -> None:
    """Records published and handed over steadily to a partition the consumer fetches (it
    has just caught up by fetching): a fetch would take each of them before the hand-over is
    looked at, every round, unless the partition is paused once the hand-over holds its next
    record. Most of them must come from the hand-over."""
    tag = uuid.uuid4().hex[:6]
    await _run_one(client, tag)
    assert cluster.pool is not None
    await eventually(lambda: _closed(cluster, f"ho-{tag}"), timeout=30, what="the closed row")
    paused = await eventually(lambda: cluster.visibility._consumer.paused(), timeout=30, what="a paused partition")
    partition = sorted(paused)[0].partition  # where the run's records are
    record = await _last_record(cluster, TopicPartition(HISTORY, partition))
    handover = Handover()
    consumer = VisibilityConsumer(cluster.settings.kafka_bootstrap, cluster.pool, group=f"ho-steady-{tag}",
                                  session_timeout_ms=2000, handover=handover)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=cluster.settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    try:
        await eventually(lambda: consumer.lag() and not any(consumer.lag().values()), timeout=30,
                         what="caught up by fetching")
        fetched, sent = consumer.fetched, 0
        deadline = asyncio.get_running_loop().time() + 4.0
        while asyncio.get_running_loop().time() < deadline:  # about 4 s of steady publishing
            values = [_of_run(record, f"steady-{tag}-{sent + i}") for i in range(10)]
            futures = [await producer.send(HISTORY, v, key=record.key, partition=partition) for v in values]
            answers = await asyncio.gather(*futures)
            handover.published([(HISTORY, record.key or b"", v, ()) for v in values],
                               [Published(HISTORY, partition, a.offset) for a in answers])
            sent += len(values)
            await asyncio.sleep(0.02)  # pacing the publisher, not waiting for a result
        await eventually(lambda: consumer.lag() and not any(consumer.lag().values()), timeout=30, what="caught up")
        assert consumer.fetched - fetched < sent / 4, (consumer.fetched - fetched, sent)
    finally:
        await producer.stop()
        await consumer.stop()


async def _last_record(cluster: Cluster, tp: TopicPartition) -> ConsumerRecord:
    reader = AIOKafkaConsumer(bootstrap_servers=cluster.settings.kafka_bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        reader.assign([tp])
        reader.seek(tp, max(0, (await reader.end_offsets([tp]))[tp] - 1))
        [record] = (await reader.getmany(tp, timeout_ms=5000, max_records=1))[tp]
        return record
    finally:
        await reader.stop()


def _of_run(record: ConsumerRecord, workflow_id: str) -> bytes:
    """A copy of a HistoryRecord's value, of another workflow and run."""
    head = avro.header("HistoryRecord")
    value = record.value
    assert value is not None and value.startswith(head)
    namespace, rest = _string(value[len(head):])
    _, rest = _string(rest)  # the workflow id, replaced
    return head + avro.string(namespace) + avro.string(workflow_id) + avro.string(str(uuid.uuid4())) \
        + _string(rest)[1]


def _string(data: bytes) -> tuple[str, bytes]:
    """The Avro string at the start of ``data`` (length of one byte) and what follows."""
    length = data[0] >> 1
    assert data[0] < 0x80 and not data[0] & 1
    return data[1:1 + length].decode(), data[1 + length:]
