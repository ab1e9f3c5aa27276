"""Chaos fixtures: a Kadence cluster on a PostgreSQL of its own, which a test may stop.

The session's PostgreSQL (tests/conftest.py) is shared by every test and must never go
away; here each test gets its own embedded server (on a copy of a data directory initialised
once per session) that it can halt and resume under load, plus its own broker.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.helpers import elapse

CHAOS_SHARDS = 4
STALL_AFTER_MS = 1000  # a shard retrying this long is reported stalled (/health 503)


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[Path]:
    """A data directory initialised once and stopped: initdb takes seconds on a loaded machine
    (0.8 to 5 s here), starting a copy of its result a tenth of one."""
    with tempfile.TemporaryDirectory(prefix="kadence-chaos-pg-template-") as d:
        data = Path(d) / "data"
        EmbeddedPostgres.start(data).stop()
        yield data


@pytest.fixture
def own_postgres(_postgres_template: Path) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL for this test alone, so that the test can stop it: a server of
    its own on a copy of the session's initialised data directory."""
    with tempfile.TemporaryDirectory(prefix="kadence-chaos-pg-") as d:
        data = Path(d) / "data"
        # cp -a keeps the owner: as root, pgserver runs the server as a user of its own.
        subprocess.run(["cp", "-a", str(_postgres_template), str(data)], check=True)
        (data / ".handle_pids.json").unlink(missing_ok=True)  # the template's server's handles
        pg = EmbeddedPostgres.start(data)
        try:
            yield pg
        finally:
            pg.stop()


@pytest.fixture
async def chaos_cluster(broker: EmbeddedBroker, own_postgres: EmbeddedPostgres) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=own_postgres.dsn, shards=CHAOS_SHARDS,
                        task_partitions=CHAOS_SHARDS, frontend_port=0, session_timeout_ms=3000,
                        stall_after_ms=STALL_AFTER_MS)
    async with Cluster(settings) as c:
        yield c


class HealthWatch:
    """Polls the frontend's /health in the background, keeping every status it answered."""

    def __init__(self, url: str) -> None:
        self.url = url + "/health"
        self.statuses: list[int] = []
        self.last_body: dict[str, object] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                        self.last_body = await r.json()
                        self.statuses.append(r.status)
                except (aiohttp.ClientError, TimeoutError):
                    self.statuses.append(0)
                await elapse(0.1)  # the sampling period

    async def __aenter__(self) -> HealthWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
