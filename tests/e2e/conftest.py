"""A whole Kadence (frontend, history, matching) in this process, on the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kadence import Client
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker


@pytest.fixture
async def cluster(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=fresh_dsn, shards=2, task_partitions=2,
                        frontend_port=0, session_timeout_ms=2000)
    async with Cluster(settings) as c:
        yield c


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    c = await Client.connect(cluster.url, namespace="default")
    try:
        yield c
    finally:
        await c.close()
