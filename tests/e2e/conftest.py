"""A whole Kadence (frontend, history, matching) in this process, on the real broker and database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from kadence import Client
from services.cluster import Cluster
from services.common import telemetry
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker


def _settings(broker: EmbeddedBroker, dsn: str, *, colocate: bool = True) -> Settings:
    return Settings(kafka_bootstrap=broker.bootstrap, database_url=dsn, shards=2, task_partitions=2,
                    frontend_port=0, session_timeout_ms=2000, colocate=colocate)


@pytest.fixture
async def cluster(broker: EmbeddedBroker, fresh_dsn: str) -> AsyncIterator[Cluster]:
    async with Cluster(_settings(broker, fresh_dsn)) as c:
        yield c


@pytest.fixture(scope="module")
async def module_cluster(module_broker: EmbeddedBroker, module_dsn: str) -> AsyncIterator[Cluster]:
    """One cluster for all the tests of a module, for modules whose tests each use their own
    workflow ids and task queues and leave the cluster as they found it (no test stops,
    breaks or patches a service, or counts what the whole cluster holds). A cluster takes
    over a second to start (the broker answers the first consumer-group join after about
    1 s), more than many tests take themselves. Such a module opts in by overriding
    ``cluster`` with it; a test that needs its own cluster builds it from ``broker`` and
    ``fresh_dsn``."""
    async with Cluster(_settings(module_broker, module_dsn)) as c:
        yield c


@pytest.fixture
def queue() -> str:
    """The test's own task queue, for tests sharing ``module_cluster``: runs another test left
    open never reach its worker."""
    return f"q-{uuid.uuid4().hex[:10]}"


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


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A Prometheus endpoint of this process's meter provider; services started after it
    report there. Ask for it before the cluster fixture."""
    signals = telemetry.setup_from_env("kadence-test", traces="none", metrics_port=0)
    assert signals.metrics_url is not None
    try:
        yield signals.metrics_url
    finally:
        signals.shutdown()
