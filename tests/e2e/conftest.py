"""A whole Kadence (frontend, history, matching) in this process, on the real broker and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kadence import Client
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker


def _settings(broker: EmbeddedBroker, dsn: str, *, colocate: bool = True) -> Settings:
    return Settings(kafka_bootstrap=broker.bootstrap, database_url=dsn, shards=2, task_partitions=2,
                    frontend_port=0, session_timeout_ms=2000, colocate=colocate)


@pytest.fixture
async def cluster(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    async with Cluster(_settings(broker, fresh_dsn)) as c:
        yield c


@pytest.fixture(params=[True, False], ids=["colocated", "broker"])
async def either_path_cluster(request: pytest.FixtureRequest, broker: EmbeddedBroker,
                              fresh_dsn: str) -> AsyncIterator[Cluster]:
    """The cluster twice: its services handing work over in process, and every hop through
    the broker (``KADENCE_COLOCATE=0``)."""
    async with Cluster(_settings(broker, fresh_dsn, colocate=request.param)) as c:
        yield c


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    c = await Client.connect(cluster.url, namespace="default")
    try:
        yield c
    finally:
        await c.close()
