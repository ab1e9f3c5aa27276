"""Reads answer 503 (with Retry-After) within a bound while PostgreSQL is paused (SIGSTOP):
describe, a history page, a list, a task queue's description, the admin reads (namespace
list and describe, schedule list and describe, an unknown namespace's check) and the web
UI's pages that read the database themselves (schedules, the audit). A paused server keeps its connections open and a query
simply waits, with no error; without a bound a describe waited as long as the pause. Once
PostgreSQL answers again the same reads answer 200."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from kadence import Client, Worker, workflow
from services.cluster import Cluster
from services.common.config import Settings
from services.common.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.chaos.conftest import CHAOS_SHARDS
from tests.chaos.test_postgres_pause import _processes
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)
READ_TIMEOUT_MS = 1000
# What a read may take in all while PostgreSQL is paused: the bound, the release of the
# connection it held (as long again), and a slow shared machine.
ANSWER_WITHIN_S = 6.0


@workflow.defn
class Idle:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@pytest.fixture
async def cluster_with_read_bound(broker: EmbeddedBroker, own_postgres: EmbeddedPostgres) -> AsyncIterator[Cluster]:
    settings = Settings(kafka_bootstrap=broker.bootstrap, database_url=own_postgres.dsn, shards=CHAOS_SHARDS,
                        task_partitions=CHAOS_SHARDS, frontend_port=0, session_timeout_ms=3000,
                        read_timeout_ms=READ_TIMEOUT_MS)
    async with Cluster(settings) as c:
        yield c


async def test_reads_answer_503_with_retry_after_while_postgres_is_paused(
        cluster_with_read_bound: Cluster, own_postgres: EmbeddedPostgres) -> None:
    cluster = cluster_with_read_bound
    client = await Client.connect(cluster.url)
    wid = f"idle-{uuid.uuid4().hex[:8]}"
    base = f"{cluster.url}/api/v1/namespaces/default"
    sid = f"tick-{uuid.uuid4().hex[:8]}"
    reads = [f"{base}/workflows/{wid}", f"{base}/workflows/{wid}/history", f"{base}/workflows",
             f"{base}/task-queues/reads", f"{cluster.url}/api/v1/namespaces", base, f"{base}/schedules",
             f"{base}/schedules/{sid}", f"{cluster.url}/ui/namespaces/default/schedules", f"{cluster.url}/ui/audit"]
    # Answered 404 while PostgreSQL answers (the registry reads the table for a name it does
    # not know), 503 while it is paused.
    unknown = f"{cluster.url}/api/v1/namespaces/nope-{uuid.uuid4().hex[:6]}/workflows/x"
    paused = []
    try:
        async with Worker(client, task_queue="reads", workflows=[Idle]), aiohttp.ClientSession() as http:
            await client.start_workflow(Idle.run, id=wid, task_queue="reads")
            await client.create_schedule(sid, Idle.run, task_queue="reads", interval="1h")
            for url in reads:
                async with http.get(url) as r:
                    assert r.status == 200, (url, r.status, await r.text())
            async with http.get(unknown) as r:
                assert r.status == 404, (r.status, await r.text())

            paused.extend(_processes(own_postgres))
            for p in paused:
                os.kill(p.pid, signal.SIGSTOP)
            for url in [*reads, unknown.replace("nope-", "other-")]:
                began = time.monotonic()
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                    if "/ui/" in url:  # a page saying so
                        body = {"error": "Unavailable" if "<h1>Unavailable</h1>" in await r.text() else "?"}
                    else:
                        body = await r.json()
                    assert r.status == 503 and body["error"] == "Unavailable", (url, r.status, body)
                    assert int(r.headers["Retry-After"]) >= 1, url
                assert time.monotonic() - began < ANSWER_WITHIN_S, url

            for p in paused:
                os.kill(p.pid, signal.SIGCONT)
            paused.clear()

            async def all_read() -> str:
                for url in reads:
                    async with http.get(url) as r:
                        if r.status != 200:
                            return ""
                return "all 200"

            answered: str = await eventually(all_read, timeout=30, what="reads answering again")
            assert answered
            await client.get_workflow_handle(wid).terminate("done")
            await client.delete_schedule(sid)
    finally:
        for p in paused:
            os.kill(p.pid, signal.SIGCONT)
        await client.close()
