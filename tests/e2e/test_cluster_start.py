"""A one-process cluster's start (services/cluster.py) on the real broker and PostgreSQL:
visibility joins its consumer group while history joins its own, so it holds its partitions
when start returns and a stop right after a start waits for no join."""

from __future__ import annotations

import time

from services.cluster import Cluster
from services.common.embedded import EmbeddedBroker
from tests.helpers import eventually

from .conftest import _settings

# Well under the broker's answer to a new group's join (about 1 s), well over a stop (~0.03 s).
PROMPTLY = 0.5


async def test_visibility_holds_its_partitions_when_start_returns_and_a_stop_waits_for_no_join(
        broker: EmbeddedBroker, fresh_dsn: str) -> None:
    cluster = Cluster(_settings(broker, fresh_dsn))
    await cluster.start()
    try:
        await eventually(lambda: cluster.visibility._consumer.assignment(), timeout=PROMPTLY,
                         what="visibility's partitions")
    finally:
        began = time.monotonic()
        await cluster.stop()
    assert time.monotonic() - began < PROMPTLY
