"""What a stop, or a start cut short, leaves running in the event loop: nothing.

A one-process cluster stopped after its broker died: aiokafka's consumer stop raised a
cancellation there (kadence_protocol/kafka_stop.py), which ended the cluster's stop at the first
consumer and left the other services' consumers retrying the dead broker for as long as the
loop ran. A cluster whose start was cancelled (or failed) left the services it had started; an SDK
KafkaIngress whose replies' consumer failed to start left its producer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from kadence.kafka import KafkaIngress
from kadence_protocol import kafka_stop
from kadence_protocol.kafka_stop import stop_consumer
from services.cluster import Cluster
from services.common import kafka
from services.common.embedded import EmbeddedBroker, free_port
from services.history import HistoryService
from tests.helpers import eventually

from .conftest import _settings

pytestmark = pytest.mark.timeout(90)


def _nothing_left(before: set[asyncio.Task[object]]) -> bool:
    """No task started since ``before`` still runs (else they are named, with where each waits)."""
    left = [f"{t.get_name()} {t.get_coro()!r}" for t in asyncio.all_tasks() - before
            if not t.done() and t is not asyncio.current_task()]
    assert not left, left
    return True


def _fetches_failing(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.name.startswith("aiokafka") and "Failed fetch messages" in r.getMessage() for r in caplog.records)


def _dies(broker: EmbeddedBroker) -> None:
    """The broker dies (SIGKILL), as in a crash, with no grace for its clients (``stop()`` gives it one)."""
    os.killpg(broker.process.pid, signal.SIGKILL)
    broker.process.wait(timeout=10)


async def test_a_consumer_whose_broker_died_stops_with_nothing_left_running(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    before = set(asyncio.all_tasks())
    broker = await EmbeddedBroker.start()
    try:
        await kafka.ensure_topics(broker.bootstrap, 2, 2, None)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="g", enable_auto_commit=False,
                                    session_timeout_ms=2000, heartbeat_interval_ms=500)
        consumer.subscribe([kafka.REQUESTS])
        await consumer.start()  # returns once the group assigned the partitions
        for tp in consumer.assignment():
            await consumer.position(tp)  # fetching from here on
        reading = asyncio.create_task(consumer.getmany(timeout_ms=60_000))  # as a service's loop reads
    finally:
        _dies(broker)
    # Its fetches now fail and wait to be retried: the stop cancels such a wait.
    await eventually(lambda: _fetches_failing(caplog), timeout=30, what="fetches failing")
    reading.cancel()  # a service cancels its loop, then stops the consumer
    await stop_consumer(consumer)
    await eventually(lambda: _nothing_left(before), timeout=10, what="no task of the consumer left")


async def test_a_cluster_whose_broker_died_stops_every_service(fresh_dsn: str, caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    # A consumer whose broker is gone stops only when its stop is cut short (kafka_stop.py): 3 s
    # here rather than 10 takes the same path.
    monkeypatch.setattr(kafka_stop, "STOP_WAIT_S", 3.0)
    before = set(asyncio.all_tasks())
    broker = await EmbeddedBroker.start()
    cluster = Cluster(_settings(broker, fresh_dsn))
    try:
        await cluster.start()
    finally:
        _dies(broker)
    await eventually(lambda: _fetches_failing(caplog), timeout=30, what="fetches failing")
    await cluster.stop()
    await eventually(lambda: _nothing_left(before), timeout=10, what="no task of the cluster left")


def _history_joining(cluster: Cluster) -> bool:
    """History's consumer has its group coordinator: it waits for the group's assignment."""
    history = getattr(cluster, "history", None)
    return (isinstance(history, HistoryService) and history._consumer is not None
            and history._consumer._coordinator is not None)


async def test_a_cluster_start_cancelled_while_history_joins_its_group_leaves_nothing_running(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    before = set(asyncio.all_tasks())
    cluster = Cluster(_settings(broker, fresh_dsn))
    starting = asyncio.create_task(cluster.start())
    # History's start waits for its group's first join: the broker answers it after about 1 s.
    await eventually(lambda: _history_joining(cluster), timeout=30, every=0.01, what="history joining its group")
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await eventually(lambda: _nothing_left(before), timeout=10, what="no task of the cluster left")


async def test_a_cluster_whose_frontend_cannot_listen_leaves_nothing_running(broker: EmbeddedBroker,
                                                                              fresh_dsn: str) -> None:
    """The frontend's start fails last, after its Kafka consumer and producer started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        before = set(asyncio.all_tasks())
        cluster = Cluster(dataclasses.replace(_settings(broker, fresh_dsn), frontend_port=taken.getsockname()[1]))
        with pytest.raises(OSError, match="address already in use"):
            await cluster.start()
    await eventually(lambda: _nothing_left(before), timeout=10, what="no task of the cluster left")


async def test_a_kafka_ingress_whose_reply_reader_cannot_start_leaves_nothing_running(
        broker: EmbeddedBroker) -> None:
    """Its producer starts on the broker, then its replies' consumer fails to (no broker where it looks)."""
    before = set(asyncio.all_tasks())
    ingress = KafkaIngress(broker.bootstrap)
    await ingress._replies.stop()  # never started; in its place, one that cannot reach a broker
    ingress._replies = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{free_port()}", group_id=None)
    with pytest.raises(KafkaConnectionError):
        await ingress.__aenter__()
    await eventually(lambda: _nothing_left(before), timeout=10, what="no task of the ingress left")
