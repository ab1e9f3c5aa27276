"""The embedded broker (services/common/embedded.py): its start when another process takes the
free port it picked before the broker binds it (it starts on another free port), and its stop
with clients still connected."""

from __future__ import annotations

import socket
import time

import pytest
from aiokafka import AIOKafkaProducer

from services.common import embedded, kafka
from services.common.embedded import EmbeddedBroker

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("listening", [True, False], ids=["taken-and-listening", "taken"])
async def test_a_port_taken_before_the_broker_binds_it_is_picked_again(
        listening: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        if listening:
            taken.listen()  # another server, answering connections on it
        picks = [taken.getsockname()[1]]  # the first pick, taken once picked
        free_port = embedded.free_port
        monkeypatch.setattr(embedded, "free_port", lambda: picks.pop() if picks else free_port())
        broker = await EmbeddedBroker.start()
        try:
            assert broker.port != taken.getsockname()[1] and broker.process.poll() is None
            await kafka.ensure_topics(broker.bootstrap, 1, 1, None)  # a Kafka broker answers there
        finally:
            broker.stop()


async def test_a_broker_with_a_client_connected_stops_within_its_grace() -> None:
    """Tansu holds on after SIGTERM until its clients leave (a worker's, an SDK's): its stop
    took the whole 5 s of its wait for it, the Ctrl-C of `kadence dev` a user feels."""
    broker = await EmbeddedBroker.start()
    client = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await client.start()
    try:
        await client.partitions_for("kadence.requests")  # connected, and stays
        started = time.monotonic()
        broker.stop()
        took = time.monotonic() - started
        assert broker.process.poll() is not None
        assert took < 2.5, took  # its grace (0.5 s) and a loaded machine's slack, not 5 s
    finally:
        broker.stop()
        await client.stop()
