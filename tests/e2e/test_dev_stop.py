"""`kadence dev` stopped by Ctrl-C or SIGTERM while a Kafka client of a user's is still connected to
its broker: it ends with exit code 0, no traceback, and does not wait on the broker. Tansu ignores
SIGTERM until its clients leave, and the broker's stop waited 5 s for it before it killed it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import start_dev, stop_dev

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_dev_stops_at_once_with_a_client_of_its_broker_connected(sig: signal.Signals, tmp_path: Path) -> None:
    dev = await start_dev(tmp_path / "data", tmp_path / "dev.log")
    client = AIOKafkaProducer(bootstrap_servers=dev.kafka)
    try:
        await client.start()
        assert await client.partitions_for("kadence.requests")  # connected, and stays so
        started = time.monotonic()
        stop_dev(dev.process, sig)
        took = time.monotonic() - started
    finally:
        stop_dev(dev.process)
        await client.stop()
    out = dev.log.read_text()
    assert dev.process.returncode == 0, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    # The services' stop and PostgreSQL's take about 2 s here; the broker's wait alone was 5 s.
    assert took < 5.0, took
